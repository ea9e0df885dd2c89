"""The train stage's command: check params, then run stages.train under `accelerate launch` with
the config named by train.accelerate_config (one process, several, or several machines).

Bad params stop here, before any process starts: one `error:` line, exit status 2. A StageError
inside a training process is reported the same way: the process prints its `error:` line and
records it in the file named by ERROR_FILE_ENV, and the launcher's own traceback is left out.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from stages.common import ERROR_FILE_ENV, run_stage
from stages.params import check_context, load_params

TRACEBACK = "Traceback (most recent call last):"


def launch(config_path):
    """Run the training processes; returns the exit status, 2 when a process reported a StageError."""
    with tempfile.TemporaryDirectory() as tmp:
        error_file = Path(tmp) / "error"
        env = {**os.environ, ERROR_FILE_ENV: str(error_file)}
        command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--config_file", str(config_path), "-m", "stages.train"]
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
        held = []  # from the first traceback on: the launcher's own, when a process reported an error
        for line in process.stderr:
            if held or line.startswith(TRACEBACK):
                held.append(line)
            else:
                sys.stderr.write(line)
        process.wait()
        if process.returncode and error_file.exists():
            return 2
        sys.stderr.writelines(held)
        return process.returncode


def main():
    model_params, train_params = load_params("model"), load_params("train")
    check_context(model_params, load_params("tokenize")["block_size"])
    status = launch(train_params["accelerate_config"])
    if status:
        sys.exit(status)


if __name__ == "__main__":
    run_stage(main)
