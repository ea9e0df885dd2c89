"""Seals: a checkpoint (or the finished run in final/) is trusted only while its files are the ones saved.

When a directory is complete, SEAL records the size and sha256 of each of its files; it is
written last, so a directory without one was never finished. Before a directory is reused its
files are checked against the seal. One that fails (a full disk, a failed copy between machines,
a partial `dvc pull`) is set aside as `corrupt-<name>`, with a warning saying why: never used,
never deleted.
"""
import os
from pathlib import Path

from transformers import TrainerCallback

from stages.common import file_sha256, log, read_json, write_json

SEAL = "sealed.json"


def seal(directory):
    """Record the size and sha256 of every file under `directory`."""
    directory = Path(directory)
    files = {str(f.relative_to(directory)): {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
             for f in sorted(directory.rglob("*")) if f.is_file() and f.name != SEAL}
    write_json(directory / SEAL, files)


def is_sealed(directory):
    return (Path(directory) / SEAL).is_file()


def seal_problem(directory):
    """Why `directory` does not match its seal, or None when every file it lists is there, whole and unchanged.
    Sizes are compared first, for every file, so a cut-short file is found without hashing the rest."""
    directory = Path(directory)
    try:
        files = read_json(directory / SEAL)
    except FileNotFoundError:
        return f"it has no {SEAL} (its save never finished)"
    except (OSError, ValueError) as error:
        return f"its {SEAL} cannot be read ({error})"
    for name, saved in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != saved["bytes"]:
            return f"{name} has {path.stat().st_size:,} bytes, {saved['bytes']:,} when saved"
    for name, saved in files.items():
        if file_sha256(directory / name) != saved["sha256"]:
            return f"{name} is not the file that was saved (sha256 differs)"
    return None


def set_aside(directory, problem):
    """Move a directory that failed verification to a free `corrupt-<name>` beside it."""
    directory = Path(directory)
    target, n = directory.with_name(f"corrupt-{directory.name}"), 1
    while target.exists():
        n += 1
        target = directory.with_name(f"corrupt-{directory.name}-{n}")
    os.replace(directory, target)
    log.warning("train: %s fails verification: %s; set aside as %s", directory, problem, target)


class SealCheckpoints(TrainerCallback):
    """Seals each checkpoint once Trainer has written it (on the process that saves)."""

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            seal(Path(args.output_dir) / f"checkpoint-{state.global_step}")
