"""A worker machine's part in a training run over several machines:

    python -m tools.train_worker CONFIG [--wait SECONDS]

Rank 0 runs `dvc repro` (or `dvc exp run`) with train.accelerate_config set to its copy of the
config (machine_rank: 0); every other machine runs this command in a checkout with the same
params, code, tokenizer and tokens (`dvc pull`), with its own copy (machine_rank: 1, 2, ...).
The training processes run in a scratch directory that links this checkout's inputs, so this
workspace, its outputs and its DVC state are left as they are; only rank 0 writes results.
The command waits up to --wait seconds for rank 0 to open main_process_ip:main_process_port.
"""

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import yaml

from stages import train
from tolstoy.config.params import stage_sections
from tolstoy.console import log, run_stage
from tolstoy.training.launcher import launch, scratch_workspace, wait_for_rank0, worker_config

ROOT = Path(__file__).resolve().parent.parent


def train_stage_arguments():
    """The train stage's paths, as dvc.yaml's command gives them to rank 0."""
    command = shlex.split(yaml.safe_load(Path("dvc.yaml").read_text(encoding="utf-8"))["stages"]["train"]["cmd"])
    return train.arguments(command[command.index("stages.train") + 1 :])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="this machine's accelerate config (machine_rank >= 1)")
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for rank 0 (default 600)")
    args = parser.parse_args()
    config = worker_config(args.config)
    paths = train_stage_arguments()
    # bad params stop here, not in the middle of rank 0's run
    model_params, train_params, _ = stage_sections(paths, "model", "train", "tokenize")
    log.info(
        "worker: machine %d of %d, waiting for rank 0 at %s:%s",
        config.machine_rank,
        config.num_machines,
        config.main_process_ip,
        config.main_process_port,
    )
    wait_for_rank0(config, args.config, args.wait)
    with tempfile.TemporaryDirectory(prefix="tolstoy-worker-") as scratch:
        inputs = [
            Path("params.yaml"),
            *paths.preset,
            Path("configs"),
            paths.tokenizer,
            paths.tokens,
            *[Path(b) for b in [model_params.base] if b and Path(b).exists()],
        ]
        scratch_workspace(Path(scratch), inputs, paths.checkpoints, [ROOT / "stages", ROOT / "tolstoy"])
        status = launch(args.config.resolve(), train_params.peer_timeout, train.process_command(paths), cwd=scratch)
    if status:
        sys.exit(status)
    log.info("worker: training finished; rank 0 holds the results")


if __name__ == "__main__":
    run_stage(main, "train worker")
