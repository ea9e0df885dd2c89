"""Token files: texts encoded in pieces, then end-of-text, appended to a flat file per split, and
the meta.json that Blocks reads (the tokenize stage's data/tokens, the groups stage's texts)."""

import os
import re

import numpy as np
from tokenizers import Tokenizer

from tolstoy import StageError
from tolstoy.data.pool import workers
from tolstoy.files import read_json, reading

PIECE_CHARS = 1 << 14  # texts are encoded in pieces of about this many characters...
ENCODE_BATCH_CHARS = 1 << 18  # ...and this many characters of pieces per batch
# Between a non-space character and whitespace there is always a pre-token boundary of the
# byte-level BPE (GPT-2's split pattern), so pieces cut there encode to the ids of the uncut text.
SAFE_CUT = re.compile(r"(?<=\S)(?=\s)")


def load_tokenizer(directory, threads=None):
    """The saved fast tokenizer and its end-of-text id, read with `tokenizers` alone: importing
    transformers would cost this stage about 240 MB and 2 s. It encodes a batch of pieces on
    `threads` of its own (tolstoy.data.pool.workers() unless given; set before its first batch starts them)."""
    os.environ["RAYON_NUM_THREADS"] = str(threads or workers())
    with reading(directory, "a tokenizer"):
        eos = read_json(directory / "tokenizer_config.json").get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    eos_id = tokenizer.token_to_id(eos) if eos else None
    if eos_id is None:
        raise StageError(f"{directory} has no end-of-text (eos) token: re-run the tokenizer stage")
    return tokenizer, eos_id


def pieces(text, size=PIECE_CHARS):
    """Cut text into pieces of at least `size` characters (the last may be shorter) at safe places."""
    start = 0
    while len(text) - start > size and (cut := SAFE_CUT.search(text, start + size)):
        yield text[start : cut.start()]
        start = cut.start()
    yield text[start:]


def batches(text):
    """The pieces of text, in batches of about ENCODE_BATCH_CHARS characters."""
    batch, batch_chars = [], 0
    for piece in pieces(text):
        batch.append(piece)
        batch_chars += len(piece)
        if batch_chars >= ENCODE_BATCH_CHARS:
            yield batch
            batch, batch_chars = [], 0
    if batch:
        yield batch


def encoded(tokenizer, eot_id, text):
    """The ids of `text` and end-of-text, encoded in pieces (a batch of them at a time)."""
    ids = [
        i
        for batch in batches(text)
        for encoding in tokenizer.encode_batch_fast(batch, add_special_tokens=False)
        for i in encoding.ids
    ]
    ids.append(eot_id)
    return np.array(ids, dtype=token_dtype(tokenizer))


class TokenWriter:
    """Appends texts' ids to a file, counting tokens, and the characters and bytes they encode."""

    def __init__(self, path):
        self.file = open(path, "wb")
        self.tokens = self.chars = self.bytes = 0

    def write(self, ids, chars, n_bytes):
        ids.tofile(self.file)
        self.tokens, self.chars, self.bytes = self.tokens + len(ids), self.chars + chars, self.bytes + n_bytes

    def close(self):
        self.file.close()


def token_dtype(tokenizer):
    return np.uint16 if tokenizer.get_vocab_size(with_added_tokens=True) <= np.iinfo(np.uint16).max + 1 else np.uint32


def close_split(writer, what, block_size, advice):
    """Close the writer; its figures for meta.json, which must make one block at least."""
    writer.close()
    blocks = writer.tokens // block_size
    if blocks < 1:
        raise StageError(
            f"{what} has {writer.tokens} tokens, fewer than one block of tokenize.block_size={block_size}: {advice}"
        )
    return {"tokens": writer.tokens, "blocks": blocks, "chars": writer.chars, "bytes": writer.bytes}


def tokens_meta(tokenizer, eot_id, block_size, splits):
    """meta.json of a token directory: what Blocks needs to read each split's file."""
    return {
        "dtype": np.dtype(token_dtype(tokenizer)).name,
        "block_size": block_size,
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "eot_id": eot_id,
        **splits,
    }
