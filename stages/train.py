"""train: GPT-2 trained on the token blocks of TOKENS (tolstoy/training/run.py), exported to MODEL.

    python -m stages.train TOKENS TOKENIZER MODEL CHECKPOINTS LIVE COST METRICS

It runs in this process when train.accelerate_config starts one process on one machine, else under
`accelerate launch`, each process running this command with --process. Bad params stop it before any process starts.
"""

import argparse
import sys
from pathlib import Path

from tolstoy.config.params import GENERATION_KEYS, check_context, load_params
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
    return parser.parse_args(argv)


def main(argv=None):
    args = arguments(argv)
    model_params, train_params = load_params("model"), load_params("train")
    check_context(model_params, load_params("tokenize")["block_size"])
    process = ["-m", "stages.train", *(str(getattr(args, name)) for name in PATHS), "--process"]  # what each runs
    config, peer_timeout = train_params["accelerate_config"], train_params["peer_timeout"]
    if status := start(config, peer_timeout, process, lambda: train_process(args)):
        sys.exit(status)


def train_process(args):
    from tolstoy.training import distributed, run  # torch and transformers: imported once the params pass

    files, sample_params = run.RunFiles(**{name: getattr(args, name) for name in PATHS}), load_params("sample")
    generation = {key: sample_params[key] for key in GENERATION_KEYS}
    with distributed.leaving_together():  # the group PartialState opens is closed however the process ends
        run.train(files, load_params("model"), load_params("train"), load_params("tokenize")["block_size"], generation)


if __name__ == "__main__":
    if "--process" in sys.argv[1:]:
        run_stage(lambda: train_process(arguments(sys.argv[1:])), "train")
    else:
        run_stage(main, "train launcher")
