"""The GPU check's settings rows: bench.gpu --settings runs each setting on a tiny model (here on
the CPU), and bench.gpu_check's summary words them, the TF32 rows without an MFU."""

import json
import math
import subprocess
import sys

import pytest

from bench.gpu import SETTINGS
from bench.gpu_check import TINY_THROUGHPUT, summary
from bench.workspace import python_env
from tests.helpers import ROOT


@pytest.mark.slow
def test_gpu_settings_rows_each_train_and_the_tf32_ones_carry_no_mfu(tmp_path):
    result = tmp_path / "settings.json"
    # eager: compiling each row would outweigh the rest of the test
    tiny = [*TINY_THROUGHPUT, "--eager"]
    subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--settings", "--json", str(result), *tiny],
        cwd=ROOT,
        env=python_env(),
        check=True,
        capture_output=True,
    )
    rows = json.loads(result.read_text())
    assert [row["variant"] for row in rows] == list(SETTINGS)
    assert {row["config"] for row in rows} == {"1x64/128/50257"}  # --block reaches the model and its blocks
    assert all(row["tokens_per_sec"] > 0 and math.isfinite(row["loss_after"]) for row in rows)
    assert [row["mfu_%"] is None for row in rows] == ["tf32" in row.arguments for row in SETTINGS.values()]

    table = summary({"settings": {"status": 0, "seconds": 1.0, "runs": rows}})
    assert list(table["step"]) == ["settings"] * len(SETTINGS)
    assert ["MFU" in text for text in table["figures"]] == [row["mfu_%"] is not None for row in rows]
