"""tokenize: split documents into train/validation, encode, separate with end-of-text, pack blocks.

Each document is cut into contiguous spans of about `span_chars` characters at paragraph
boundaries, and a seeded random `val_fraction` of all spans becomes validation. Validation
thus samples every part of every work (not each work's tail, which holds editorial notes),
and no span is in both splits. Runs of spans of one split are encoded as segments, each
followed by the end-of-text token, and appended to a flat token file per split (streamed, so
memory stays flat: one document, and a batch of pieces of it, at a time). Training reads
block i as tokens[i*block_size:(i+1)*block_size]. The train split's words are listed too.
"""
import random
import re

import numpy as np
from tokenizers import Tokenizer

from stages.common import StageError, atomic_path, log, read_json, reading, run_stage, write_json
from stages.documents import iter_documents
from stages.params import load_params
from stages.paths import DOCS, TOKENIZE_METRICS, TOKENIZER, TOKENS, TRAIN_WORDS
from stages.words import words

SPLITS = ("train", "val")
PIECE_CHARS = 1 << 14  # texts are encoded in pieces of about this many characters...
ENCODE_BATCH_CHARS = 1 << 18  # ...and this many characters of pieces per batch
# Between a non-space character and whitespace there is always a pre-token boundary of the
# byte-level BPE (GPT-2's split pattern), so pieces cut there encode to the ids of the uncut text.
SAFE_CUT = re.compile(r"(?<=\S)(?=\s)")


def load_tokenizer(directory):
    """The saved fast tokenizer and its end-of-text id, read with `tokenizers` alone: importing
    transformers would cost this stage about 240 MB and 2 s."""
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
        yield text[start:cut.start()]
        start = cut.start()
    yield text[start:]


def document_texts(shown_as=None):
    return (doc["text"] for doc in iter_documents(DOCS, ["text"], shown_as))


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
    """Encodes texts in batches of pieces and appends their ids, each text followed by end-of-text, to a file."""

    def __init__(self, path, tokenizer, eot_id, dtype):
        self.file = open(path, "wb")
        self.tokenizer, self.eot_id, self.dtype = tokenizer, eot_id, dtype
        self.pending, self.pending_chars = [], 0  # (piece, whether it ends its text)
        self.tokens = self.chars = self.bytes = 0

    def add(self, text):
        self.chars += len(text)
        self.bytes += len(text.encode())
        *head, last = pieces(text)
        for piece, ends_text in [(piece, False) for piece in head] + [(last, True)]:
            self.pending.append((piece, ends_text))
            self.pending_chars += len(piece)
            if self.pending_chars >= ENCODE_BATCH_CHARS:
                self.flush()

    def flush(self):
        encodings = self.tokenizer.encode_batch_fast([piece for piece, _ in self.pending], add_special_tokens=False)
        ids = []
        for (_, ends_text), encoding in zip(self.pending, encodings):
            ids += encoding.ids + [self.eot_id] if ends_text else encoding.ids
        np.array(ids, dtype=self.dtype).tofile(self.file)
        self.tokens += len(ids)
        self.pending, self.pending_chars = [], 0

    def close(self):
        self.flush()
        self.file.close()


def token_dtype(tokenizer):
    return np.uint16 if tokenizer.get_vocab_size(with_added_tokens=True) <= np.iinfo(np.uint16).max + 1 else np.uint32


def close_split(writer, what, block_size, advice):
    """Close the writer; its figures for meta.json, which must make one block at least."""
    writer.close()
    blocks = writer.tokens // block_size
    if blocks < 1:
        raise StageError(f"{what} has {writer.tokens} tokens, fewer than one block of tokenize.block_size={block_size}: {advice}")
    return {"tokens": writer.tokens, "blocks": blocks, "chars": writer.chars, "bytes": writer.bytes}


def tokens_meta(tokenizer, eot_id, block_size, splits):
    """meta.json of a token directory: what Blocks needs to read each split's file."""
    return {"dtype": np.dtype(token_dtype(tokenizer)).name, "block_size": block_size, "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
            "eot_id": eot_id, **splits}


def main():
    params = load_params("tokenize")
    block_size = params["block_size"]
    tokenizer, eot_id = load_tokenizer(TOKENIZER)
    stats = {}
    with atomic_path(TOKENS) as tmp:
        tmp.mkdir()
        writers = {split: TokenWriter(tmp / f"{split}.bin", tokenizer, eot_id, token_dtype(tokenizer)) for split in SPLITS}
        # Two passes over the table, one document in memory at a time: count the spans, then encode.
        n_spans = sum(1 for text in document_texts() for _ in spans(text, params["span_chars"]))
        val = choose_validation(n_spans, params["val_fraction"], params["seed"])
        train_words = set()  # what the sample stage counts as real words
        for split, text in segments(document_texts("tokenize: documents"), params["span_chars"], val):
            writers[split].add(text)
            train_words.update(words(text) if split == "train" else ())
        (tmp / TRAIN_WORDS.name).write_text("".join(f"{word}\n" for word in sorted(train_words)), encoding="utf-8")
        for split, writer in writers.items():
            stats[split] = close_split(writer, f"the {split} split", block_size, "use a smaller block_size, a different val_fraction, or more text")
        write_json(tmp / "meta.json", tokens_meta(tokenizer, eot_id, block_size, stats))
    total_tokens = sum(s["tokens"] for s in stats.values())
    metrics = {
        **{f"{split}_{key}": value for split, s in stats.items() for key, value in s.items()},
        "bytes_per_token": round(sum(s["bytes"] for s in stats.values()) / total_tokens, 4),
        "chars_per_token": round(sum(s["chars"] for s in stats.values()) / total_tokens, 4),
    }
    write_json(TOKENIZE_METRICS, metrics)
    log.info("tokenize: train %(train_tokens)d tokens (%(train_blocks)d blocks), val %(val_tokens)d tokens, %(bytes_per_token).2f bytes/token", metrics)


if __name__ == "__main__":
    run_stage(main)
