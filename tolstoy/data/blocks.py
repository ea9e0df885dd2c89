"""Token blocks as a dataset: what training and evaluation read from data/tokens."""

import math
from pathlib import Path

import numpy as np

from tolstoy import StageError
from tolstoy.files import REBUILD_OR_RESTORE, read_json, reading


def bits_per_char(loss, chars_per_token):
    """Bits per character of a mean next-token loss in nats, at `chars_per_token` characters per token."""
    return loss / math.log(2) / chars_per_token


class Blocks:
    """Map-style dataset over a flat token file: item i is block i, as input_ids and labels.

    `limit` keeps that many blocks evenly spread over the file (a representative subset)."""

    def __init__(self, tokens_dir, split, limit=None):
        with reading(Path(tokens_dir) / "meta.json", "the token files' description"):
            self.meta = meta = read_json(Path(tokens_dir) / "meta.json")
            path, dtype, tokens = Path(tokens_dir) / f"{split}.bin", np.dtype(meta["dtype"]), meta[split]["tokens"]
        if not path.is_file() or path.stat().st_size != tokens * dtype.itemsize:
            size = f"has {path.stat().st_size:,} bytes" if path.is_file() else "is missing"
            raise StageError(
                f"{path} {size}, but meta.json says {tokens:,} tokens of {dtype.itemsize} bytes: {REBUILD_OR_RESTORE}"
            )
        self.tokens = np.memmap(path, dtype=dtype, mode="r")
        self.block_size = meta["block_size"]
        self.chars_per_token = meta[split]["chars"] / meta[split]["tokens"]  # of the whole split
        n_blocks = meta[split]["blocks"]
        self.stride = max(1, n_blocks // limit) if limit else 1
        self.n = min(n_blocks, limit) if limit else n_blocks

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        start = i * self.stride * self.block_size
        ids = self.tokens[start : start + self.block_size].astype(np.int64)
        return {"input_ids": ids, "labels": ids}
