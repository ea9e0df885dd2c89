"""The base model to fine-tune (model.base): where its files are and what they are.

A local base lives under bases/ (or the folder a stage's --bases names: a recipe's own base), which
the tokenizer and train stages depend on, so `dvc.lock` records its files and replacing its weights
makes both stages stale. A hub id is read at the commit model.revision names (offline: from the
local hub cache); the commit resolved is part of the base's identity, which the train stage
fingerprints and the model card names.
"""

import hashlib
import re
from pathlib import Path

from tolstoy import StageError
from tolstoy.files import file_sha256

# A model directory's identity: weights, config and tokenizer files (not a model card or logs).
MODEL_FILES = re.compile(r".*\.(safetensors|bin|json|txt|model)$")


def is_local(base):
    """Whether a checked model.base is a local directory (params refuse one outside the folder of bases)."""
    return Path(base).is_dir()


def hub_snapshot(base, revision):
    """The local snapshot directory of hub model `base` at `revision` (named after its commit)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(base, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
        )
    except (
        Exception
    ) as error:  # offline without a cached copy, unknown id or revision, no network: the hub's own message
        raise StageError(
            f"model.base={base!r} at model.revision={revision!r} cannot be had: {type(error).__name__}: {error}"
        ) from None


def base_directory(base, revision):
    """Where the files of base model `base` are: its local directory, or the hub snapshot of `revision`."""
    return Path(base) if is_local(base) else hub_snapshot(base, revision)


def base_identity(base, revision):
    """The base as what made the model: path or hub id, hub commit, and one sha256 over its model
    files (None for '': training from scratch)."""
    if not base:
        return None
    directory = base_directory(base, revision)
    files = sorted(f for f in directory.rglob("*") if f.is_file() and MODEL_FILES.fullmatch(f.name))
    if not files:
        raise StageError(f"model.base={base!r}: {directory} holds no model files")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(directory).as_posix()}\0{file_sha256(f)}\n".encode())
    commit = None if is_local(base) else directory.name
    return {"base": base, "commit": commit, "sha256": digest.hexdigest()}
