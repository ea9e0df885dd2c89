"""groups: the texts of groups.sources, prepared like the training pages, for evaluate to score.

    python -m stages.groups TOKENIZER GROUPS

Each group is fetched (FETCH_MIRROR applies) and cleaned with params.yaml's fetch and clean settings and encoded with
TOKENIZER into GROUPS/<name>/tokens (tolstoy/data/groups.py); GROUPS/groups.json lists their figures.
"""

import argparse
import os
from pathlib import Path

from tolstoy import StageError
from tolstoy.config.params import add_params_options, stage_sections
from tolstoy.console import log, run_stage
from tolstoy.data.groups import prepare_group
from tolstoy.data.tokens import load_tokenizer
from tolstoy.files import atomic_path, write_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokenizer", type=Path, help="the tokenizer's directory")
    parser.add_argument("groups", type=Path, help="the directory of prepared groups written")
    add_params_options(parser)
    args = parser.parse_args(argv)
    params, fetch_params, clean_params, tokenize_params = stage_sections(args, "groups", "fetch", "clean", "tokenize")
    mirror = os.environ.get("FETCH_MIRROR", "")  # as the fetch stage's
    tokenizer, eot_id = load_tokenizer(args.tokenizer)
    prepared = {}
    with atomic_path(args.groups) as tmp:
        tmp.mkdir()
        for name, sources in params.sources.items():
            log.info("groups: %s", name)
            try:
                prepared[name] = prepare_group(
                    tmp / name,
                    sources,
                    fetch_params,
                    clean_params,
                    mirror,
                    tokenizer,
                    eot_id,
                    tokenize_params.block_size,
                )
            except StageError as error:
                raise StageError(f"groups.sources.{name}: {error}") from None
        write_json(tmp / "groups.json", prepared)  # the directory is never empty: DVC tracks it either way
    log.info(
        "groups: %d prepared (%s)",
        len(prepared),
        ", ".join(f"{name} {g['chars']:,} characters" for name, g in prepared.items()) or "none set",
    )


if __name__ == "__main__":
    run_stage(main)
