"""End to end: the real `dvc` CLI in a temporary git repository holding this working tree: the
tiny run the tests share, what a change of params re-runs, and fetching through FETCH_MIRROR
from a local HTTP server."""

import json
import math

import pytest

from tests.helpers import FOREIGN, dvc, ran_stages, repro_output, set_param, write_author

pytestmark = pytest.mark.slow  # end to end: the real dvc CLI in temporary git repositories

STAGES = ["validate", "fetch", "clean", "tokenizer", "tokenize", "groups", "train", "evaluate", "sample"]


def test_fetch_mirror_fetches_from_the_mirror_and_records_the_canonical_urls(repo):
    directory, env = repo
    assert ran_stages(dvc(directory, "repro", "fetch", env=env).stdout) == ["validate", "fetch"]
    manifest = json.loads((directory / "data/raw/manifest.json").read_text())
    assert len(manifest) == 3 and all(
        r["error"] is None and r["source"].startswith("http://127.0.0.1") for r in manifest
    )
    assert all(r["url"].startswith("http://az.lib.ru/") for r in manifest)
    lock = (directory / "dvc.lock").read_text()
    assert "http://az.lib.ru/" in lock and "127.0.0.1" not in lock


def test_repro_runs_every_stage_once_then_only_what_changed(reproduced, reproduced_copy):
    assert ran_stages(repro_output(reproduced[0])) == STAGES  # the shared tiny run's `dvc repro`
    directory, env = reproduced_copy
    manifest = json.loads((directory / "data/raw/manifest.json").read_text())
    assert len(manifest) == 3 and all(r["error"] is None for r in manifest)
    clean = json.loads((directory / "metrics/clean.json").read_text())
    assert clean["documents"] == 3 and 0 < clean["chars_out"] < clean["chars_in"]
    tokens = json.loads((directory / "metrics/tokenize.json").read_text())
    assert tokens["train_tokens"] > tokens["val_tokens"] > 0
    evaluation = json.loads((directory / "metrics/eval.json").read_text())
    assert 0 < evaluation["bits_per_char"] < 8 and math.isfinite(evaluation["perplexity"])
    assert (directory / "models/model/model.safetensors").exists() and (
        directory / "models/tokenizer/tokenizer.json"
    ).exists()
    assert "## Пьер закашлялся и" in (directory / "metrics/samples.md").read_text(encoding="utf-8")
    assert "up to date" in dvc(directory, "status", env=env).stdout
    assert ran_stages(dvc(directory, "repro", env=env).stdout) == []
    metrics = json.loads(dvc(directory, "metrics", "show", "--json", env=env).stdout)
    assert "metrics/eval.json" in json.dumps(metrics) and "metrics/train.json" in json.dumps(metrics)
    plots = dvc(directory, "plots", "show", "--json", env=env).stdout
    assert "Loss" in plots and "Learning rate" in plots

    weights, evaluation = (
        (directory / "models/model/model.safetensors").read_bytes(),
        (directory / "metrics/eval.json").read_bytes(),
    )
    set_param(
        directory, "sample", "max_new_tokens", 12
    )  # also the exported model's generation default: train restores, never retrains
    sampled = dvc(directory, "repro", env=env)
    assert (
        ran_stages(sampled.stdout) == ["validate", "train", "evaluate", "sample"]
        and "are restored" in sampled.stdout + sampled.stderr
    )
    assert (directory / "models/model/model.safetensors").read_bytes() == weights and (
        directory / "metrics/eval.json"
    ).read_bytes() == evaluation
    assert json.loads((directory / "models/model/generation_config.json").read_text())["max_new_tokens"] == 12
    set_param(directory, "sample", "seed", 7)
    assert ran_stages(dvc(directory, "repro", env=env).stdout) == ["validate", "sample"]

    other = write_author(directory.parent / "shared/other", [FOREIGN])  # texts to score: training is untouched
    set_param(directory, "groups", "sources", {"other": [other]})
    assert ran_stages(dvc(directory, "repro", env=env).stdout) == ["validate", "groups", "evaluate"]
    assert (directory / "models/model/model.safetensors").read_bytes() == weights
    scored = json.loads((directory / "metrics/eval.json").read_text())
    assert scored["groups"]["other"] > 0 and scored["bits_per_char"] == json.loads(evaluation)["bits_per_char"]

    set_param(directory, "tokenizer", "vocab_size", 350)
    assert ran_stages(dvc(directory, "repro", env=env).stdout) == ["validate"] + STAGES[3:]
    assert json.loads((directory / "data/tokens/meta.json").read_text())["vocab_size"] == 350
