"""Checkpoints of the train stage: resumed when made by the same run and sealed, set aside when damaged,
the finished run restored."""

import logging
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from bench.workspace import stage_command
from tests.helpers import (
    call_stage,
    damage,
    eval_loss,
    file_bytes,
    params_with,
    python_env,
    tiny_params,
    train_copy,
    weights,
    write_params,
)
from tolstoy.files import remove


def test_interrupted_run_resumes_to_the_same_model(built_copy, caplog):
    uninterrupted = weights()
    # as if killed after checkpoint-4 was written: the later checkpoint, the model and final/ never came to be
    for path in ("models/checkpoints/checkpoint-8", "models/checkpoints/final", "models/model"):
        shutil.rmtree(path)
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "resuming from models/checkpoints/checkpoint-4" in caplog.text
    resumed = weights()
    for name, tensor in uninterrupted.items():
        assert torch.allclose(resumed[name], tensor, rtol=1e-4, atol=1e-6), name


def test_a_checkpoint_never_sealed_is_removed(built_copy, caplog):
    (
        built_copy / "models/checkpoints/checkpoint-8/sealed.json"
    ).unlink()  # killed while saving: the seal is written last
    shutil.rmtree(built_copy / "models/checkpoints/final")  # ... so the run never finished
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "removing incomplete checkpoint models/checkpoints/checkpoint-8" in caplog.text
    assert "resuming from models/checkpoints/checkpoint-4" in caplog.text


@pytest.mark.parametrize(
    "name, how",
    [("model.safetensors", "cut short"), ("optimizer.pt", "cut short"), ("optimizer.pt", "one bit flipped")],
)
def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_resumed(built_copy, caplog, name, how):
    uninterrupted = weights()
    damage(built_copy / "models/checkpoints/checkpoint-8" / name, how)
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    reason = "bytes, " if how == "cut short" else "is not the file that was saved"
    assert re.search(
        rf"checkpoint-8 fails verification: {name} (has [\d,]+ bytes, [\d,]+ when saved|is not the "
        r"file that was saved)",
        caplog.text,
    )
    assert reason in caplog.text and "set aside as models/checkpoints/corrupt-checkpoint-8" in caplog.text
    assert "resuming from models/checkpoints/checkpoint-4" in caplog.text
    assert (built_copy / "models/checkpoints/corrupt-checkpoint-8" / name).is_file()  # kept, not deleted
    for key, tensor in uninterrupted.items():
        assert torch.allclose(weights()[key], tensor, rtol=1e-4, atol=1e-6), key


def test_with_no_checkpoint_that_verifies_training_starts_from_the_first_step(built_copy, caplog):
    for step in (4, 8):
        damage(built_copy / f"models/checkpoints/checkpoint-{step}/optimizer.pt", "one bit flipped")
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "no checkpoint in models/checkpoints verifies: training starts from the first step" in caplog.text
    assert "from the start" in caplog.text
    assert sorted(p.name for p in (built_copy / "models/checkpoints").glob("corrupt-*")) == [
        "corrupt-checkpoint-4",
        "corrupt-checkpoint-8",
    ]


def test_an_unreadable_fingerprint_starts_fresh_saying_so(built_copy, caplog):
    (built_copy / "models/checkpoints/fingerprint.json").write_text('{"model": {', encoding="utf-8")
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "models/checkpoints/fingerprint.json cannot be read (" in caplog.text
    assert (
        "starting fresh: checkpoints in models/checkpoints were made with other" in caplog.text
        and "from the start" in caplog.text
    )


def test_a_damaged_final_run_is_trained_again(built_copy, caplog):
    uninterrupted = weights()
    damage(built_copy / "models/checkpoints/final/model/model.safetensors", "one bit flipped")
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert (
        "models/checkpoints/final fails verification: model/model.safetensors is not the file that was saved"
        in caplog.text
    )
    assert (
        "resuming from models/checkpoints/checkpoint-4" in caplog.text
        and (built_copy / "models/checkpoints/corrupt-final").is_dir()
    )
    for key, tensor in uninterrupted.items():
        assert torch.allclose(weights()[key], tensor, rtol=1e-4, atol=1e-6), key


@pytest.mark.parametrize(
    "section, values, what", [("model", {"n_layer": 2}, "model"), ("train", {"lr": 0.01}, "train")]
)
def test_changed_settings_start_fresh(built_copy, caplog, section, values, what):
    write_params(".", params_with(**{section: values}))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert f"starting fresh: checkpoints in models/checkpoints were made with other {what}" in caplog.text
    assert "from the start" in caplog.text


def test_operational_params_do_not_invalidate_checkpoints(built_copy, caplog):
    write_params(".", params_with(train={"logging_steps": 1, "save_total_limit": 3}))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "models/checkpoints/final holds the finished run" in caplog.text


@pytest.mark.slow  # a training process killed, then a second run
def test_killed_training_resumes_to_the_same_result(built, tmp_path, monkeypatch, caplog):
    settings = dict(max_steps=100, save_steps=4, logging_steps=4, eval_steps=50, keep="last")
    reference = train_copy(built, tmp_path / "reference", **settings)
    monkeypatch.chdir(reference)
    call_stage("train")
    killed = train_copy(built, tmp_path / "killed", **settings)
    process = subprocess.Popen(
        [*stage_command("train"), "--process"],
        cwd=killed,
        env=python_env(),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "killed.log", "w"),
    )
    while not (killed / "models/checkpoints/checkpoint-8/trainer_state.json").exists() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (killed / "models/checkpoints/checkpoint-100").exists(), "killed too late"
    monkeypatch.chdir(killed)
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    # killed in the middle of saving checkpoint-8 (unsealed: removed), or a few steps after it
    resumed = re.search(r"resuming from models/checkpoints/checkpoint-(\d+)", caplog.text)
    assert resumed and 4 <= int(resumed[1]) < 100, caplog.text[-2000:]
    for name, tensor in weights(reference / "models/model").items():
        assert torch.allclose(weights(killed / "models/model")[name], tensor, rtol=1e-4, atol=1e-6), name
    assert eval_loss(killed, monkeypatch) == pytest.approx(eval_loss(reference, monkeypatch), rel=1e-4)
    steps = [
        int(row.split("\t")[0])
        for row in (killed / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
    ]
    assert steps == list(range(4, 101, 4))  # rows logged after the checkpoint were not duplicated


def test_rerun_of_a_finished_run_restores_its_outputs_byte_for_byte(built_copy, caplog):
    outputs = ("models/model", "metrics/train_cost.json", "metrics/train", "models/checkpoints")
    before = file_bytes(Path("."), outputs)
    for path in ("models/model", "metrics/train_cost.json"):  # what DVC removes before running the stage
        remove(path)
    write_params(".", params_with(train={"logging_steps": 1}))  # operational: the finished run still stands
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "its model and cost record are restored" in caplog.text
    after = file_bytes(Path("."), outputs)
    assert after.keys() == before.keys() and all(after[k] == before[k] for k in before)
    assert "training_args.bin" in {Path(k).name for k in after if k.startswith("models/model")}


def test_killed_while_exporting_resumes_from_the_checkpoint_before(built_copy, caplog):
    uninterrupted = weights()
    for path in ("models/checkpoints/final", "models/model"):  # checkpoint-8 was written, the export was not
        remove(path)
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "resuming from models/checkpoints/checkpoint-4" in caplog.text
    assert "missing keys" not in caplog.text and "lm_head.weight is tied to the input embeddings" in caplog.text
    for name, tensor in uninterrupted.items():
        assert torch.allclose(weights()[name], tensor, rtol=1e-4, atol=1e-6), name
