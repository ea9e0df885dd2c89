"""clean: the fetched pages of RAW -> one table of documents, a report row per page, and counts.

    python -m stages.clean RAW DOCS REPORT METRICS

Decoding, extraction with trafilatura, apparatus and duplicates: tolstoy/data/cleaning.py.
"""

import argparse
from pathlib import Path

from tolstoy.config.params import add_params_options, stage_sections
from tolstoy.console import log, run_stage
from tolstoy.data.cleaning import REPORT_COLUMNS, clean_metrics, stored_pages, write_documents
from tolstoy.files import atomic_path, write_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="the fetched pages and their manifest")
    parser.add_argument("docs", type=Path, help="the table of documents written (parquet)")
    parser.add_argument("report", type=Path, help="a row per page written (CSV)")
    parser.add_argument("metrics", type=Path, help="the counts written (JSON)")
    add_params_options(parser)
    args = parser.parse_args(argv)
    (params,) = stage_sections(args, "clean")
    report = write_documents(stored_pages(args.raw), args.raw, args.docs, params)
    with atomic_path(args.report) as tmp:
        report[REPORT_COLUMNS].to_csv(tmp, index=False)
    metrics = clean_metrics(report, params.drop_apparatus)
    write_json(args.metrics, metrics)
    log.info(
        "clean: %(documents)d documents, %(chars_in)d -> %(chars_out)d characters, %(paragraphs)d paragraphs", metrics
    )


if __name__ == "__main__":
    run_stage(main)
