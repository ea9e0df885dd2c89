"""tokenize: split documents into train/validation, encode, separate with end-of-text, pack blocks.

Each document is cut into contiguous spans of about `span_chars` characters at paragraph
boundaries, and a seeded random `val_fraction` of all spans becomes validation. Validation
thus samples every part of every work (not each work's tail, which holds editorial notes),
and no span is in both splits. Runs of spans of one split are encoded as segments, each
followed by the end-of-text token, and appended to a flat token file per split (streamed, so
memory stays flat). Training reads block i as tokens[i*block_size:(i+1)*block_size].
"""
import random
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from stages.common import StageError, atomic_path, iter_documents, load_params, log, run_stage, write_json

DOCS = Path("data/clean/docs.parquet")
TOKENIZER = Path("models/tokenizer")
OUT = Path("data/tokens")
METRICS = Path("metrics/tokenize.json")
SPLITS = ("train", "val")
ENCODE_BATCH_CHARS = 1 << 20


def document_texts():
    return (doc["text"] for doc in iter_documents(DOCS, ["text"]))


def spans(text, span_chars):
    """Contiguous spans of whole paragraphs, each at least span_chars long (the last may be shorter)."""
    span = []
    for paragraph in text.split("\n"):
        span.append(paragraph)
        if sum(map(len, span)) >= span_chars:
            yield "\n".join(span)
            span = []
    if span:
        yield "\n".join(span)


def choose_validation(n_spans, val_fraction, seed):
    if n_spans < 2:
        raise StageError(f"the corpus makes {n_spans} span(s) of tokenize.span_chars: too small to split off a non-empty validation set")
    k = min(n_spans - 1, max(1, round(n_spans * val_fraction)))
    return set(random.Random(seed).sample(range(n_spans), k))


def segments(texts, span_chars, val):
    """Yield (split, text) for maximal runs of consecutive spans of one split within a document."""
    index = 0
    for text in texts:
        run, run_split = [], None
        for span in spans(text, span_chars):
            split = "val" if index in val else "train"
            index += 1
            if run and split != run_split:
                yield run_split, "\n".join(run)
                run = []
            run.append(span)
            run_split = split
        if run:
            yield run_split, "\n".join(run)


class TokenWriter:
    """Encodes texts in batches and appends their ids, each followed by end-of-text, to a file."""

    def __init__(self, path, tokenizer, dtype):
        self.file = open(path, "wb")
        self.tokenizer, self.dtype = tokenizer, dtype
        self.pending, self.pending_chars = [], 0
        self.tokens = self.chars = self.bytes = 0

    def add(self, text):
        self.pending.append(text)
        self.pending_chars += len(text)
        self.chars += len(text)
        self.bytes += len(text.encode())
        if self.pending_chars >= ENCODE_BATCH_CHARS:
            self.flush()

    def flush(self):
        eot = self.tokenizer.eos_token_id
        for encoding in self.tokenizer.backend_tokenizer.encode_batch(self.pending, add_special_tokens=False):
            ids = np.array(encoding.ids + [eot], dtype=self.dtype)
            ids.tofile(self.file)
            self.tokens += len(ids)
        self.pending, self.pending_chars = [], 0

    def close(self):
        self.flush()
        self.file.close()


def main():
    params = load_params("tokenize")
    block_size = params["block_size"]
    if block_size < 2:
        raise StageError(f"tokenize.block_size={block_size}: a block needs at least 2 tokens")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32
    stats = {}
    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        writers = {split: TokenWriter(tmp / f"{split}.bin", tokenizer, dtype) for split in SPLITS}
        # Two passes over the table, one document in memory at a time: count the spans, then encode.
        n_spans = sum(1 for text in document_texts() for _ in spans(text, params["span_chars"]))
        val = choose_validation(n_spans, params["val_fraction"], params["seed"])
        for split, text in segments(document_texts(), params["span_chars"], val):
            writers[split].add(text)
        for split, writer in writers.items():
            writer.close()
            blocks = writer.tokens // block_size
            if blocks < 1:
                raise StageError(
                    f"the {split} split has {writer.tokens} tokens, fewer than one block of tokenize.block_size={block_size}: "
                    "use a smaller block_size, a different val_fraction, or more text"
                )
            stats[split] = {"tokens": writer.tokens, "blocks": blocks, "chars": writer.chars, "bytes": writer.bytes}
        meta = {"dtype": np.dtype(dtype).name, "block_size": block_size, "vocab_size": len(tokenizer), "eot_id": tokenizer.eos_token_id, **stats}
        write_json(tmp / "meta.json", meta)
    total_tokens = sum(s["tokens"] for s in stats.values())
    metrics = {
        **{f"{split}_{key}": value for split, s in stats.items() for key, value in s.items()},
        "bytes_per_token": round(sum(s["bytes"] for s in stats.values()) / total_tokens, 4),
        "chars_per_token": round(sum(s["chars"] for s in stats.values()) / total_tokens, 4),
    }
    write_json(METRICS, metrics)
    log.info("tokenize: train %(train_tokens)d tokens (%(train_blocks)d blocks), val %(val_tokens)d tokens, %(bytes_per_token).2f bytes/token", metrics)


if __name__ == "__main__":
    run_stage(main)
