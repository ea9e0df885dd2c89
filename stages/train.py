"""train: GPT-2 trained on the token blocks (tolstoy/training/run.py), with the accelerate config
train.accelerate_config names: in this process when it starts one process on one machine, else
under `accelerate launch`, each process running `python -m stages.train --process`.

Bad params stop here, before any process starts: one `error:` line, exit status 2.
"""

import os
import sys

from stages.paths import CHECKPOINTS, MODEL, TOKENIZER, TOKENS, TRAIN_COST, TRAIN_LIVE, TRAIN_METRICS
from tolstoy.config.params import GENERATION_KEYS, check_context, load_params
from tolstoy.console import run_stage
from tolstoy.training.launcher import launch, one_process_env, runs_one_process

TRAIN_PROCESS = ["-m", "stages.train", "--process"]  # what `accelerate launch` runs in every process


def main():
    model_params, train_params = load_params("model"), load_params("train")
    check_context(model_params, load_params("tokenize")["block_size"])
    config = train_params["accelerate_config"]
    if runs_one_process(config):
        os.environ.update(one_process_env(config, TRAIN_PROCESS))
        train_process()
    elif status := launch(config, train_params["peer_timeout"], TRAIN_PROCESS):
        sys.exit(status)


def train_process():
    from tolstoy.training import distributed, run  # torch and transformers: imported once the params pass

    files = run.RunFiles(
        tokenizer=TOKENIZER,
        tokens=TOKENS,
        checkpoints=CHECKPOINTS,
        model=MODEL,
        live=TRAIN_LIVE,
        cost=TRAIN_COST,
        metrics=TRAIN_METRICS,
    )
    sample_params = load_params("sample")
    with distributed.leaving_together():  # the group PartialState opens is closed however the process ends
        run.train(
            files,
            load_params("model"),
            load_params("train"),
            load_params("tokenize")["block_size"],
            {key: sample_params[key] for key in GENERATION_KEYS},
        )


if __name__ == "__main__":
    if sys.argv[1:] == ["--process"]:
        run_stage(train_process, "train")
    else:
        run_stage(main, "train launcher")
