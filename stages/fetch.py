"""fetch: download the pages of fetch.urls into RAW, exactly as received, with RAW/manifest.json.

    python -m stages.fetch RAW

FETCH_MIRROR="FROM=TO [FROM=TO ...]" rewrites URL prefixes before fetching, e.g.
FETCH_MIRROR="http://az.lib.ru/=file:///path/to/shared/mirror/az.lib.ru/" for the mirror on disk
(tolstoy/data/fetching.py). A rerun asks the server whether each stored page changed, and keeps a
stored page whose re-fetch fails.
"""

import argparse
import os
from pathlib import Path

from tolstoy.config.params import add_params_options, stage_sections
from tolstoy.console import log, run_stage
from tolstoy.data.fetching import check_fetched, fetch_all


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="the directory of pages and their manifest")
    add_params_options(parser)
    args = parser.parse_args(argv)
    (params,) = stage_sections(args, "fetch")
    manifest = fetch_all(params, args.raw, os.environ.get("FETCH_MIRROR", ""))
    check_fetched(manifest, params.on_error)
    stored, failed = [r for r in manifest if r["file"]], [r for r in manifest if r["error"]]
    log.info(
        "fetch: %d pages, %d bytes, %d not modified, %d failed (%d of them kept from an earlier fetch)",
        len(stored),
        sum(r["bytes"] for r in stored),
        sum(r.get("status") == 304 for r in stored if not r["error"]),
        len(failed),
        sum(bool(r["file"]) for r in failed),
    )


if __name__ == "__main__":
    run_stage(main)
