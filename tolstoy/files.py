"""Files written whole or not at all, JSON, hashes, and read failures as one error naming the file."""

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from tolstoy import StageError

# What to do about an output of the pipeline that cannot be read.
REBUILD_OR_RESTORE = "rebuild it with `dvc repro` or restore it with `dvc checkout`"


def remove(path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (file or directory); move it into place only on success.

    Readers never see a half-written output: on any error, or Ctrl-C, the temporary is removed
    and whatever was at `path` before stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        remove(stale)  # left by a killed run
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    if path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def reading(path, what):
    """Any failure to read `path` as `what` (a truncated, missing or foreign file) becomes one
    StageError naming the file; libraries raise many kinds of error for it."""
    try:
        yield
    except StageError:
        raise
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise StageError(
            f"{path}: cannot be read as {what} ({type(error).__name__}{': ' + detail if detail else ''}); "
            f"{REBUILD_OR_RESTORE}"
        ) from None


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
