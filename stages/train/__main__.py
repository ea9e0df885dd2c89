"""The train stage's command (dvc.yaml): check params, then run the training processes
(stages/train/process.py) with the accelerate config named by train.accelerate_config.

Bad params stop here, before any process starts: one `error:` line, exit status 2.
"""
import sys

from stages.common import run_stage
from stages.params import check_context, load_params
from stages.train.launch import launch


def main():
    model_params, train_params = load_params("model"), load_params("train")
    check_context(model_params, load_params("tokenize")["block_size"])
    status = launch(train_params["accelerate_config"], train_params["peer_timeout"])
    if status:
        sys.exit(status)


if __name__ == "__main__":
    run_stage(main, "train launcher")
