"""train: GPT-2 trained on the token blocks of TOKENS (tolstoy/training/run.py), exported to MODEL.

    python -m stages.train TOKENS TOKENIZER MODEL CHECKPOINTS LIVE COST METRICS

The accelerate config that train.accelerate_config names says where it runs: in this process when
it starts one process on one machine, else under `accelerate launch`, each process running this
command with --process. Bad params stop here, before any process starts: one `error:` line, exit status 2.
"""

import argparse
import os
import sys
from pathlib import Path

from tolstoy.config.params import GENERATION_KEYS, check_context, load_params
from tolstoy.console import run_stage
from tolstoy.training.launcher import launch, one_process_env, runs_one_process

PATHS = {
    "tokens": "the token files (train and val splits)",
    "tokenizer": "the tokenizer's directory",
    "model": "the model's directory written",
    "checkpoints": "the checkpoints' directory, kept between runs to resume",
    "live": "DVCLive's directory of series",
    "cost": "the plan and what the run took, written (JSON)",
    "metrics": "the run's figures written (JSON)",
}


def arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, help_text in PATHS.items():
        parser.add_argument(name, type=Path, help=help_text)
    parser.add_argument("--process", action="store_true", help="run as one of the training processes")
    return parser.parse_args(argv)


def process_command(args):
    """What `accelerate launch` runs in every process: this command with --process."""
    return ["-m", "stages.train", *(str(getattr(args, name)) for name in PATHS), "--process"]


def main(argv=None):
    args = arguments(argv)
    model_params, train_params = load_params("model"), load_params("train")
    check_context(model_params, load_params("tokenize")["block_size"])
    config = train_params["accelerate_config"]
    if runs_one_process(config):
        os.environ.update(one_process_env(config, process_command(args)))
        train_process(args)
    elif status := launch(config, train_params["peer_timeout"], process_command(args)):
        sys.exit(status)


def train_process(args):
    from tolstoy.training import distributed, run  # torch and transformers: imported once the params pass

    files = run.RunFiles(**{name: getattr(args, name) for name in PATHS})
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
    if "--process" in sys.argv[1:]:
        run_stage(lambda: train_process(arguments(sys.argv[1:])), "train")
    else:
        run_stage(main, "train launcher")
