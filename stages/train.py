"""train: GPT-2 trained on the token blocks of TOKENS (tolstoy/training/run.py), exported to MODEL;
bad params stop it before the training processes start (each runs this command with --process).

    python -m stages.train TOKENS TOKENIZER MODEL CHECKPOINTS LIVE COST METRICS [--preset FILE] [--bases DIR]
"""

import argparse
import sys
from pathlib import Path

from tolstoy.config.params import add_params_options, stage_sections
from tolstoy.console import run_stage
from tolstoy.training.launcher import start

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
    add_params_options(parser, bases=True)
    return parser.parse_args(argv)


def main(argv=None):
    args = arguments(argv)
    if args.process:
        return train_process(args)
    _, train_params, _ = stage_sections(args, "model", "train", "tokenize")  # all three checked before any process
    if status := start(train_params, process_command(args), lambda: train_process(args)):
        sys.exit(status)


def process_command(args):  # what each training process runs, on this machine and on workers (tools.train_worker)
    options = [f"--preset={preset}" for preset in args.preset] + [f"--bases={args.bases}"]
    return ["-m", "stages.train", *(str(getattr(args, name)) for name in PATHS), *options, "--process"]


def train_process(args):
    from tolstoy.training import distributed, run  # torch and transformers: imported once the params pass

    files = run.RunFiles(**{name: getattr(args, name) for name in PATHS})
    sections = stage_sections(args, "model", "train", "tokenize", "sample")
    model_params, train_params, tokenize_params, sample_params = sections
    with distributed.leaving_together():  # the group PartialState opens is closed however the process ends
        run.train(files, model_params, train_params, tokenize_params.block_size, sample_params)


if __name__ == "__main__":
    run_stage(main, "train" if "--process" in sys.argv[1:] else "train launcher")
