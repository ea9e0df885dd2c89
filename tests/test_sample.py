from pathlib import Path

import pytest

from stages.common import StageError
from tests.conftest import call_stage, tiny_params, write_params


def sample_with(**values):
    params = tiny_params([])
    params["sample"].update(values)
    write_params(".", params)
    call_stage("sample")
    return Path("metrics/samples.md").read_text(encoding="utf-8")


def test_samples_name_each_prompt_and_settings(built):
    text = (built / "metrics/samples.md").read_text(encoding="utf-8")
    assert "## Пьер закашлялся и" in text and "## Наташа" in text
    assert "temperature=0.8" in text and "max_new_tokens=10" in text


def test_seeded_sampling_repeats_and_a_new_seed_changes_it(built_copy):
    first, again, other = sample_with(seed=1), sample_with(seed=1), sample_with(seed=2)
    assert first == again
    assert first.split("\n", 3)[3] != other.split("\n", 3)[3]


def test_greedy_decoding(built_copy):
    assert sample_with(temperature=0) == sample_with(temperature=0, seed=5).replace("seed=5", "seed=1337")


@pytest.mark.parametrize("values, message", [
    ({"prompts": []}, r"sample.prompts=\[\] must be a non-empty list"),
    ({"top_p": 1.5}, r"sample.top_p=1.5 must be a number > 0 and <= 1"),
])
def test_bad_params(built_copy, values, message):
    with pytest.raises(StageError, match=message):
        sample_with(**values)
