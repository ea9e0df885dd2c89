"""A worker machine's part in a training run over several machines:

    python -m stages.train.worker CONFIG [--wait SECONDS]

Rank 0 runs `dvc repro` (or `dvc exp run`) with train.accelerate_config set to its copy of the
config (machine_rank: 0); every other machine runs this command in a checkout with the same
params, code, tokenizer and tokens (`dvc pull`), with its own copy (machine_rank: 1, 2, ...).
The training processes run in a scratch directory that links this checkout's inputs, so this
workspace, its outputs and its DVC state are left as they are; only rank 0 writes results.
The command waits up to --wait seconds for rank 0 to open main_process_ip:main_process_port.
"""
import argparse
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from accelerate.commands.config.config_args import load_config_from_file

from stages.common import StageError, log, run_stage
from stages.params import check_context, load_params
from stages.rules import accelerate_config_problem
from stages.paths import CHECKPOINTS, TOKENIZER, TOKENS
from stages.train.launch import launch

PACKAGE = Path(__file__).resolve().parent.parent


def worker_config(path):
    """The accelerate config of a worker machine; StageError when it is not one."""
    if not Path(path).is_file():
        raise StageError(f"{path}: no such accelerate config")
    if problem := accelerate_config_problem(path):
        raise StageError(f"{path}: {problem}")
    config = load_config_from_file(str(path))
    if config.num_machines < 2 or not 0 < config.machine_rank < config.num_machines:
        raise StageError(f"{path}: machine_rank={config.machine_rank} of num_machines={config.num_machines} is not a worker "
                         "(rank 0 runs `dvc repro`; a worker's copy has machine_rank 1 .. num_machines-1)")
    if not config.main_process_ip or not config.main_process_port:
        raise StageError(f"{path}: main_process_ip and main_process_port must name rank 0's address")
    return config


def wait_for_rank0(config, path, seconds):
    address = (config.main_process_ip, int(config.main_process_port))
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(address, timeout=min(5.0, seconds)):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise StageError(f"rank 0 did not answer at {address[0]}:{address[1]} within {seconds:g}s ({error.strerror or error}): "
                                 f"start `dvc repro` on rank 0, and check main_process_ip/main_process_port in {path}") from None
            time.sleep(0.5)


def scratch_workspace(directory, model_base):
    """Links to what the training processes read. Checkpoints to resume from are linked file by
    file, and their RNG states copied: what Trainer writes on this machine stays in the scratch."""
    inputs = [Path("params.yaml"), Path("configs"), TOKENIZER, TOKENS] + ([Path(model_base)] if model_base and Path(model_base).exists() else [])
    for path in inputs:
        if not path.exists():
            raise StageError(f"{path} is missing: a worker needs the same inputs as rank 0 (run `dvc pull` or `dvc repro tokenize`)")
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).symlink_to(path.resolve())
    (directory / PACKAGE.name).symlink_to(PACKAGE)
    for checkpoint in CHECKPOINTS.glob("checkpoint-*"):
        (directory / checkpoint).mkdir(parents=True)
        for file in checkpoint.iterdir():
            if file.name.startswith("rng_state"):  # rewritten by this machine's processes at the next save
                shutil.copy2(file, directory / file)
            else:
                (directory / file).symlink_to(file.resolve())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="this machine's accelerate config (machine_rank >= 1)")
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for rank 0 (default 600)")
    args = parser.parse_args()
    config = worker_config(args.config)
    model_params, train_params = load_params("model"), load_params("train")  # bad params stop here, not in the middle of rank 0's run
    check_context(model_params, load_params("tokenize")["block_size"])
    log.info("worker: machine %d of %d, waiting for rank 0 at %s:%s", config.machine_rank, config.num_machines,
             config.main_process_ip, config.main_process_port)
    wait_for_rank0(config, args.config, args.wait)
    with tempfile.TemporaryDirectory(prefix="tolstoy-worker-") as scratch:
        scratch_workspace(Path(scratch), model_params["base"])
        status = launch(args.config.resolve(), train_params["peer_timeout"], cwd=scratch)
    if status:
        sys.exit(status)
    log.info("worker: training finished; rank 0 holds the results")


if __name__ == "__main__":
    run_stage(main, "train worker")
