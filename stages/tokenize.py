"""tokenize: the documents of DOCS split into train and validation, encoded with TOKENIZER into TOKENS.

    python -m stages.tokenize DOCS TOKENIZER TOKENS METRICS

Validation is a seeded sample of spans of every work; each run of spans of one split is followed
by end-of-text in a flat token file per split, read as blocks of tokenize.block_size
(tolstoy/data/splits.py). The train split's words are listed for the sample stage.
"""

import argparse
from pathlib import Path

from tolstoy.config.params import add_params_options, stage_sections
from tolstoy.console import log, run_stage
from tolstoy.data.splits import split_metrics, write_splits
from tolstoy.files import write_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("docs", type=Path, help="the table of documents (parquet)")
    parser.add_argument("tokenizer", type=Path, help="the tokenizer's directory")
    parser.add_argument("tokens", type=Path, help="the directory of token files written")
    parser.add_argument("metrics", type=Path, help="the figures of each split written (JSON)")
    add_params_options(parser)
    args = parser.parse_args(argv)
    (params,) = stage_sections(args, "tokenize")
    metrics = split_metrics(write_splits(args.docs, args.tokenizer, args.tokens, params))
    write_json(args.metrics, metrics)
    log.info(
        "tokenize: train %(train_tokens)d tokens (%(train_blocks)d blocks), val %(val_tokens)d "
        "tokens, %(bytes_per_token).2f bytes/token",
        metrics,
    )


if __name__ == "__main__":
    run_stage(main)
