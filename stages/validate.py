"""validate: check every key of params.yaml before any other stage runs; CHECKED records that it passed.

    python -m stages.validate CHECKED

DVC removes a stage's outputs before it runs the stage's command, so a bad value found by the
stage itself would already have cost its previous outputs. Every stage depends on this one's
output instead: a bad value stops `dvc repro` here, with one `error:` line naming the key, and
nothing is removed. The output never changes, so passing re-runs nothing downstream.
"""

import argparse
from pathlib import Path

from tolstoy.config.params import SECTIONS, add_params_options, check_all, read_params
from tolstoy.console import log, run_stage
from tolstoy.files import atomic_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checked", type=Path, help="the file written once params.yaml passes")
    add_params_options(parser, bases=True)
    args = parser.parse_args(argv)
    check_all(read_params(presets=args.preset), args.preset, args.bases)
    with atomic_path(args.checked) as tmp:
        tmp.write_text("params.yaml is valid\n", encoding="utf-8")
    keys = sum(len(model.model_fields) for model in SECTIONS.values())
    log.info("validate: %d keys in %d sections are valid", keys, len(SECTIONS))


if __name__ == "__main__":
    run_stage(main)
