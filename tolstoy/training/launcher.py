"""Starting a run's training processes: under `accelerate launch` with an accelerate config
(several processes, or several machines); a config of one process on one machine runs it in the
launcher's own process, with the environment `accelerate launch` would give it.

A StageError inside a training process is reported as the stage's own: the process prints its
`error:` line and records it in the file named by ERROR_FILE_ENV, and the launcher's own
traceback is left out.

A worker machine of a run over several machines checks its config, waits for rank 0 and runs its
processes in a scratch directory that links the checkout's inputs (tools/train_worker.py).
"""

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tolstoy import StageError
from tolstoy.config.accelerate import accelerate_config_problem, config_uses_cpu
from tolstoy.console import ERROR_FILE_ENV, TERMINAL_ENV

# Where the launcher's own report of a failed process begins: torch elastic's error line or a traceback.
LAUNCHER_REPORT = re.compile(r"Traceback \(most recent call last\):|E\d{4} .* failed \(exitcode")
# How rank 0's launcher reports machines that never joined (torch's static rendezvous).
MACHINES_MISSING = re.compile(r"Timed out after \d+ seconds waiting for clients\. (\d+)/(\d+) clients joined")


def runs_one_process(config_path):
    """Whether the accelerate config at config_path starts a single process on a single machine."""
    config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    return config.get("num_processes", 1) == 1 and config.get("num_machines", 1) == 1


def one_process_env(config_path, process):
    """The environment variables `accelerate launch` sets for the one process of config_path (its
    simple launcher's), read by accelerate's own code; setting them here spares starting a second
    interpreter and importing torch twice."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    args, _, _ = _validate_launch_command(
        launch_command_parser().parse_args(["--config_file", str(config_path), *process])
    )
    env = prepare_simple_launcher_cmd_env(args)[1]
    if sys.stderr.isatty():  # the progress may be a live line
        env[TERMINAL_ENV] = "1"
    return env


def start(train_params, process, run_here):
    """Run the training: `run_here()` in this process, with the environment `accelerate launch` would
    give it, when train.accelerate_config starts one process on one machine; else `launch`. Returns
    the exit status."""
    config_path = train_params.accelerate_config
    if not runs_one_process(config_path):
        return launch(config_path, train_params.peer_timeout, process)
    os.environ.update(one_process_env(config_path, process))
    run_here()
    return 0


def process_env(config_path, error_file):
    """The training processes' environment: where to record a StageError, and the config's use_cpu
    (accelerate passes it on to a single process only, not to several)."""
    env = {**os.environ, ERROR_FILE_ENV: str(error_file)}
    if config_uses_cpu(config_path):
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def launch(config_path, peer_timeout, process, cwd=None):
    """Run the training processes, `python PROCESS...` each (in cwd); returns the exit status, 2 when a
    process reported a StageError. The machines of a run wait peer_timeout seconds for each other to join."""
    with tempfile.TemporaryDirectory() as tmp:
        error_file = Path(tmp) / "error"
        env = process_env(Path(cwd or ".", config_path), error_file)
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--quiet",
            "--config_file",
            str(config_path),
            "--rdzv_conf",
            f"timeout={round(peer_timeout)}",
            *process,
        ]
        if sys.stderr.isatty():  # relayed to a terminal: the progress may be a live line
            env[TERMINAL_ENV] = "1"
        process = subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE)
        held = []  # from the launcher's report on: left out when a process reported its error
        for line in io.TextIOWrapper(
            process.stderr, encoding="utf-8", errors="replace", newline=""
        ):  # a live line ends in \r
            if held or LAUNCHER_REPORT.match(line):
                held.append(line)
            else:
                sys.stderr.write(line)
                sys.stderr.flush()
        process.wait()
        if process.returncode and error_file.exists():
            return 2
        if process.returncode and (joined := next(filter(None, map(MACHINES_MISSING.search, held)), None)):
            raise StageError(
                f"{joined[1]} of {joined[2]} machines joined within train.peer_timeout ({peer_timeout:g}s): start "
                f"`python -m tools.train_worker {config_path}` on every other machine of {config_path}"
            )
        sys.stderr.writelines(held)
        return process.returncode


def worker_config(path):
    """The accelerate config of a worker machine; StageError when it is not one."""
    if not Path(path).is_file():
        raise StageError(f"{path}: no such accelerate config")
    if problem := accelerate_config_problem(path):
        raise StageError(f"{path}: {problem}")
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    if config.num_machines < 2 or not 0 < config.machine_rank < config.num_machines:
        raise StageError(
            f"{path}: machine_rank={config.machine_rank} of num_machines={config.num_machines} is not a worker "
            "(rank 0 runs `dvc repro`; a worker's copy has machine_rank 1 .. num_machines-1)"
        )
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
                raise StageError(
                    f"rank 0 did not answer at {address[0]}:{address[1]} within {seconds:g}s "
                    f"({error.strerror or error}): "
                    f"start `dvc repro` on rank 0, and check main_process_ip/main_process_port in {path}"
                ) from None
            time.sleep(0.5)


def scratch_workspace(directory, inputs, checkpoints_dir, packages):
    """Links in `directory` to what the training processes read: `inputs` and the code's
    `packages` (relative paths). Checkpoints to resume from are linked file by file, and their RNG
    states copied: what Trainer writes on this machine stays in the scratch."""
    for path in inputs:
        if not path.exists():
            raise StageError(
                f"{path} is missing: a worker needs the same inputs as rank 0 (run `dvc pull` or `dvc repro tokenize`)"
            )
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).symlink_to(path.resolve())
    for package in packages:
        (directory / package.name).symlink_to(package)
    for checkpoint in Path(checkpoints_dir).glob("checkpoint-*"):
        (directory / checkpoint).mkdir(parents=True)
        for file in checkpoint.iterdir():
            if file.name.startswith("rng_state"):  # rewritten by this machine's processes at the next save
                shutil.copy2(file, directory / file)
            else:
                (directory / file).symlink_to(file.resolve())
