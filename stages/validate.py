"""validate: check every key of params.yaml before any other stage runs.

DVC removes a stage's outputs before it runs the stage's command, so a bad value found by the
stage itself would already have cost its previous outputs. Every stage depends on this one's
output instead: a bad value stops `dvc repro` here, with one `error:` line naming the key, and
nothing is removed. The output never changes, so passing re-runs nothing downstream.
"""

from stages.paths import PARAMS_CHECKED
from tolstoy.config.params import SCHEMA, check_all, read_params
from tolstoy.console import log, run_stage
from tolstoy.files import atomic_path


def main():
    check_all(read_params())
    with atomic_path(PARAMS_CHECKED) as tmp:
        tmp.write_text("params.yaml is valid\n", encoding="utf-8")
    log.info("validate: %d keys in %d sections are valid", sum(map(len, SCHEMA.values())), len(SCHEMA))


if __name__ == "__main__":
    run_stage(main)
