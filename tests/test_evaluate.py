import math

import pytest

from stages.common import read_json
from tests.helpers import call_stage, tiny_params, write_params


def test_metrics_are_consistent(built):
    metrics = read_json(built / "metrics/eval.json")
    meta = read_json(built / "data/tokens/meta.json")
    assert 0 < metrics["val_loss"] < math.log(meta["vocab_size"]) + 1
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["val_loss"]), rel=1e-3)
    chars_per_token = meta["val"]["chars"] / meta["val"]["tokens"]
    assert metrics["bits_per_char"] == pytest.approx(metrics["val_loss"] / math.log(2) / chars_per_token, rel=1e-4)
    assert metrics["val_blocks"] == min(16, meta["val"]["blocks"])


def test_every_block_when_max_blocks_is_zero(built_copy):
    params = tiny_params([])
    params["evaluate"].update(max_blocks=0, batch_size=7)  # a last batch shorter than the others
    write_params(".", params)
    call_stage("evaluate")
    assert read_json("metrics/eval.json")["val_blocks"] == read_json("data/tokens/meta.json")["val"]["blocks"]
