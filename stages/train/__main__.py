"""The train stage's command (dvc.yaml): check params, then run the training processes
(stages/train/process.py) with the accelerate config named by train.accelerate_config: one process
in this one, several under `accelerate launch`.

Bad params stop here, before any process starts: one `error:` line, exit status 2.
"""
import os
import sys

from stages.common import run_stage
from stages.params import check_context, load_params
from stages.train.launch import launch, one_process_env, runs_one_process


def main():
    model_params, train_params = load_params("model"), load_params("train")
    check_context(model_params, load_params("tokenize")["block_size"])
    config = train_params["accelerate_config"]
    if runs_one_process(config):
        os.environ.update(one_process_env(config))
        from stages.train import process  # torch and transformers: imported once the params pass

        process.main()
    elif status := launch(config, train_params["peer_timeout"]):
        sys.exit(status)


if __name__ == "__main__":
    run_stage(main, "train launcher")
