import logging
import math

import pytest
import torch
from safetensors.torch import load_file

from stages import train
from stages.common import StageError, read_json
from tests.conftest import run_stage, tiny_params, write_params


def params_with(**sections):
    params = tiny_params([])
    for section, values in sections.items():
        params[section].update(values)
    return params


def weights(directory="models/model"):
    return load_file(f"{directory}/model.safetensors")


@pytest.mark.parametrize("section, values, message", [
    ("model", {"n_embd": 30, "n_head": 4}, "model.n_embd=30 is not divisible by model.n_head=4"),
    ("model", {"n_positions": 16}, "tokenize.block_size=32 is larger than the model's context model.n_positions=16"),
    ("train", {"lr": 0}, "train.lr=0 must be positive"),
    ("train", {"lr": -1e-3}, "train.lr=-0.001 must be positive"),
    ("train", {"max_steps": 0, "epochs": 0}, "one must be positive"),
    ("train", {"batch_size": 0}, "train.batch_size=0 must be positive"),
    ("train", {"precision": "fp8"}, "train.precision='fp8' must be"),
])
def test_invalid_params_are_refused_before_training(built_copy, section, values, message):
    before = weights()
    write_params(".", params_with(**{section: values}))
    with pytest.raises(StageError, match=message):
        run_stage("train")
    assert all(torch.equal(before[k], v) for k, v in weights().items())  # the previous model is untouched


def test_trains_and_logs_to_dvclive(built):
    summary = read_json(built / "metrics/train/metrics.json")
    assert summary["step"] == 8
    assert math.isfinite(summary["train"]["loss"]) and math.isfinite(summary["eval"]["loss"])
    assert summary["train"]["tokens_per_sec"] > 0
    plots = built / "metrics/train/plots/metrics"
    rows = (plots / "train/loss.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "loss"] and len(rows) == 1 + 4  # logging_steps=2 of 8
    assert len((plots / "eval/loss.tsv").read_text().splitlines()) == 1 + 2  # eval_steps=4 of 8
    assert not (built / "dvc.yaml").exists()  # DVCLive never writes dvc.yaml
    assert (built / "models/model/model.safetensors").exists() and (built / "models/model/tokenizer.json").exists()
    assert sorted(p.name for p in (built / "models/checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]


def test_interrupted_run_resumes_to_the_same_model(built_copy, caplog):
    uninterrupted = weights()
    # as if killed after checkpoint-4 was written: the later checkpoint and the model never came to be
    for path in ("models/checkpoints/checkpoint-8", "models/model"):
        train.shutil.rmtree(path)
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        run_stage("train")
    assert "resuming from models/checkpoints/checkpoint-4" in caplog.text
    resumed = weights()
    for name, tensor in uninterrupted.items():
        assert torch.allclose(resumed[name], tensor, rtol=1e-4, atol=1e-6), name


def test_half_written_checkpoint_is_never_used(built_copy, caplog):
    (built_copy / "models/checkpoints/checkpoint-8/trainer_state.json").write_text('{"global_st')
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        run_stage("train")
    assert "removing incomplete checkpoint models/checkpoints/checkpoint-8" in caplog.text
    assert "resuming from models/checkpoints/checkpoint-4" in caplog.text


@pytest.mark.parametrize("section, values, what", [("model", {"n_layer": 2}, "model"), ("train", {"lr": 0.01}, "train")])
def test_changed_settings_start_fresh(built_copy, caplog, section, values, what):
    write_params(".", params_with(**{section: values}))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        run_stage("train")
    assert f"starting fresh: checkpoints in models/checkpoints were made with other {what}" in caplog.text
    assert "from the start" in caplog.text


def test_operational_params_do_not_invalidate_checkpoints(built_copy, caplog):
    write_params(".", params_with(train={"logging_steps": 1, "save_total_limit": 3}))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        run_stage("train")
    assert "resuming from models/checkpoints/checkpoint-8" in caplog.text


def test_fine_tunes_a_local_base_model(built_copy):
    base = built_copy / "base"
    train.shutil.copytree("models/model", base)
    params = params_with(model={"base": str(base), "n_layer": 99}, train={"max_steps": 4})  # shape comes from the base
    write_params(".", params)
    for stage in ("tokenizer", "tokenize", "train", "evaluate"):
        run_stage(stage)
    config = read_json("models/model/config.json")
    assert config["n_layer"] == 1 and config["n_embd"] == 32
    assert math.isfinite(read_json("metrics/eval.json")["val_loss"])


def test_base_with_another_tokenizer_is_refused(built_copy):
    base = built_copy / "base"
    train.shutil.copytree("models/model", base)
    params = params_with(model={"base": str(base)}, tokenizer={"vocab_size": 300})
    write_params(".", {**params, "model": {**params["model"], "base": ""}})
    run_stage("tokenizer")  # a freshly trained 300-token tokenizer, not the base's
    write_params(".", params)
    with pytest.raises(StageError, match="models/tokenizer is not the tokenizer of model.base"):
        run_stage("train")
