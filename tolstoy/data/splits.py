"""Splits: documents into train and validation spans, encoded, each run followed by end-of-text.

Each document is cut into contiguous spans of about `span_chars` characters at paragraph
boundaries, and a seeded random `val_fraction` of all spans becomes validation. Validation
thus samples every part of every work (not each work's tail, which holds editorial notes),
and no span is in both splits. Runs of spans of one split are encoded as segments, each
followed by the end-of-text token, and appended to a flat token file per split (tolstoy/data/tokens.py;
streamed: a worker process holds one segment at a time). Training reads block i as
tokens[i*block_size:(i+1)*block_size]. The train split's words are listed too.
"""

import multiprocessing
import random

from tolstoy import StageError
from tolstoy.console import progress
from tolstoy.data.documents import iter_documents
from tolstoy.data.pool import ordered_map
from tolstoy.data.tokens import TokenWriter, close_split, encoded, load_tokenizer, tokens_meta
from tolstoy.data.words import words
from tolstoy.files import atomic_path, write_json

SPLITS = ("train", "val")
TRAIN_WORDS = "train_words.txt"  # every word of the train split, once: what sample counts as real words


def document_texts(docs):
    return (doc["text"] for doc in iter_documents(docs, ["text"]))


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
        raise StageError(
            f"the corpus makes {n_spans} span(s) of tokenize.span_chars: too small to split off a "
            "non-empty validation set"
        )
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


ENCODER = {}  # the tokenizer of a process that encodes segments


def start_encoder(directory):
    """In a worker, one thread: the workers share the cores. In the stage itself, the tokenizer's own threads."""
    ENCODER["tokenizer"], ENCODER["eot_id"] = load_tokenizer(directory, 1 if multiprocessing.parent_process() else None)


def encode_segment(segment):
    """(split, text) -> (split, ids, characters, bytes, the text's words if it is train text): in a worker."""
    split, text = segment
    ids = encoded(ENCODER["tokenizer"], ENCODER["eot_id"], text)
    return split, ids, len(text), len(text.encode()), set(words(text)) if split == "train" else set()


def count_segments(span_counts, val):
    """How many segments `segments` yields for documents of these span counts."""
    first, count = 0, 0
    for n in span_counts:
        in_val = [i in val for i in range(first, first + n)]
        count += (n > 0) + sum(a != b for a, b in zip(in_val, in_val[1:]))
        first += n
    return count


def write_splits(docs, tokenizer_directory, tokens, params):
    """The documents of `docs` split, encoded with the tokenizer and written into the directory `tokens`
    (a flat file per split, the train split's words, meta.json); the figures of each split."""
    block_size = params.block_size
    tokenizer, eot_id = load_tokenizer(tokenizer_directory)
    stats = {}
    with atomic_path(tokens) as tmp:
        tmp.mkdir()
        writers = {split: TokenWriter(tmp / f"{split}.bin") for split in SPLITS}
        # Two passes over the table, one document in memory at a time: count the spans, then encode.
        span_counts = [sum(1 for _ in spans(text, params.span_chars)) for text in document_texts(docs)]
        val = choose_validation(sum(span_counts), params.val_fraction, params.seed)
        # Segments are encoded in worker processes (where there are enough documents) and written in order.
        encoding = ordered_map(
            encode_segment,
            segments(document_texts(docs), params.span_chars, val),
            len(span_counts),
            setup=start_encoder,
            setup_args=(tokenizer_directory,),
        )
        train_words = set()
        for split, ids, chars, n_bytes, text_words in progress(
            encoding, count_segments(span_counts, val), "tokenize: segments"
        ):
            writers[split].write(ids, chars, n_bytes)
            train_words |= text_words
        (tmp / TRAIN_WORDS).write_text("".join(f"{word}\n" for word in sorted(train_words)), encoding="utf-8")
        for split, writer in writers.items():
            stats[split] = close_split(
                writer,
                f"the {split} split",
                block_size,
                "use a smaller block_size, a different val_fraction, or more text",
            )
        write_json(tmp / "meta.json", tokens_meta(tokenizer, eot_id, block_size, stats))
    return stats


def split_metrics(stats):
    """The figures of every split in one flat mapping, with bytes and characters per token."""
    total_tokens = sum(s["tokens"] for s in stats.values())
    return {
        **{f"{split}_{key}": value for split, s in stats.items() for key, value in s.items()},
        "bytes_per_token": round(sum(s["bytes"] for s in stats.values()) / total_tokens, 4),
        "chars_per_token": round(sum(s["chars"] for s in stats.values()) / total_tokens, 4),
    }
