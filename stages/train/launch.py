"""The training processes (stages.train.process) under `accelerate launch` with an accelerate
config (several processes, or several machines); a config of one process on one machine runs it in
the launcher's own process, with the environment `accelerate launch` would give it.

A StageError inside a training process is reported as the stage's own: the process prints its
`error:` line and records it in the file named by ERROR_FILE_ENV, and the launcher's own
traceback is left out.
"""
import io
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from stages.common import ERROR_FILE_ENV, TERMINAL_ENV, StageError

# Where the launcher's own report of a failed process begins: torch elastic's error line or a traceback.
LAUNCHER_REPORT = re.compile(r"Traceback \(most recent call last\):|E\d{4} .* failed \(exitcode")
# How rank 0's launcher reports machines that never joined (torch's static rendezvous).
MACHINES_MISSING = re.compile(r"Timed out after \d+ seconds waiting for clients\. (\d+)/(\d+) clients joined")
PROCESS = "stages.train.process"


def config_uses_cpu(config_path):
    """Whether the accelerate config at config_path says use_cpu."""
    return bool(yaml.safe_load(Path(config_path).read_text(encoding="utf-8")).get("use_cpu"))


def runs_one_process(config_path):
    """Whether the accelerate config at config_path starts a single process on a single machine."""
    config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    return config.get("num_processes", 1) == 1 and config.get("num_machines", 1) == 1


def one_process_env(config_path):
    """The environment variables `accelerate launch` sets for the one process of config_path (its
    simple launcher's), read by accelerate's own code; setting them here spares starting a second
    interpreter and importing torch twice."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(config_path), "-m", PROCESS]))
    env = prepare_simple_launcher_cmd_env(args)[1]
    if sys.stderr.isatty():  # the progress may be a live line
        env[TERMINAL_ENV] = "1"
    return env


def process_env(config_path, error_file):
    """The training processes' environment: where to record a StageError, and the config's use_cpu
    (accelerate passes it on to a single process only, not to several)."""
    env = {**os.environ, ERROR_FILE_ENV: str(error_file)}
    if config_uses_cpu(config_path):
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def launch(config_path, peer_timeout, cwd=None):
    """Run the training processes (in cwd); returns the exit status, 2 when a process reported a
    StageError. The machines of a run wait peer_timeout seconds for each other to join."""
    with tempfile.TemporaryDirectory() as tmp:
        error_file = Path(tmp) / "error"
        env = process_env(Path(cwd or ".", config_path), error_file)
        command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", str(config_path),
                   "--rdzv_conf", f"timeout={round(peer_timeout)}", "-m", PROCESS]
        if sys.stderr.isatty():  # relayed to a terminal: the progress may be a live line
            env[TERMINAL_ENV] = "1"
        process = subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE)
        held = []  # from the launcher's report on: left out when a process reported its error
        for line in io.TextIOWrapper(process.stderr, encoding="utf-8", errors="replace", newline=""):  # a live line ends in \r
            if held or LAUNCHER_REPORT.match(line):
                held.append(line)
            else:
                sys.stderr.write(line)
                sys.stderr.flush()
        process.wait()
        if process.returncode and error_file.exists():
            return 2
        if process.returncode and (joined := next(filter(None, map(MACHINES_MISSING.search, held)), None)):
            raise StageError(f"{joined[1]} of {joined[2]} machines joined within train.peer_timeout ({peer_timeout:g}s): start "
                             f"`python -m stages.train.worker {config_path}` on every other machine of {config_path}")
        sys.stderr.writelines(held)
        return process.returncode

