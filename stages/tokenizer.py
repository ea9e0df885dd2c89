"""tokenizer: train a lossless byte-level BPE tokenizer on the documents of DOCS, saved in TOKENIZER.

    python -m stages.tokenizer DOCS TOKENIZER

With model.base set (a directory under bases/, or a hub id at model.revision) the base model's
own tokenizer is saved instead: a pretrained model only understands the tokenizer it was trained with.
"""

import argparse
import sys
from pathlib import Path

from tolstoy.config.params import add_params_options, stage_sections
from tolstoy.console import log, run_stage
from tolstoy.data.documents import count_documents, iter_documents
from tolstoy.data.tokenizer import base_tokenizer, train_bpe, with_newlines
from tolstoy.files import atomic_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("docs", type=Path, help="the table of documents (parquet)")
    parser.add_argument("tokenizer", type=Path, help="the tokenizer's directory written")
    add_params_options(parser, bases=True)
    args = parser.parse_args(argv)
    params, model_params = stage_sections(args, "tokenizer", "model")
    base = model_params.base
    if base:
        tokenizer = base_tokenizer(model_params)
    else:
        large = count_documents(args.docs) >= 50
        terminal = sys.stderr.isatty()  # a terminal shows the trainer's own bars, a log the documents read
        documents = iter_documents(args.docs, ["text"], "tokenizer: documents read" if large and not terminal else None)
        lines = (line for doc in documents for line in with_newlines(doc["text"]))
        tokenizer = train_bpe(lines, params.vocab_size, params.min_frequency, show_progress=large and terminal)
    with atomic_path(args.tokenizer) as tmp:
        tokenizer.save_pretrained(tmp)
    log.info(
        "tokenizer: %s, %d tokens, end-of-text %r",
        f"from {base}" if base else "trained byte-level BPE",
        len(tokenizer),
        tokenizer.eos_token,
    )


if __name__ == "__main__":
    run_stage(main)
