"""train.keep and train.patience: which step a run exports and when it stops, on a tiny run whose
validation loss must fall and then rise: it trains on one paragraph repeated and is validated on
other paragraphs of the same words. Once the paragraph is memorised the model predicts its
continuations with near certainty, and the validation loss rises by nats, on every CPU's arithmetic
far beyond the margin the tests ask for."""

import logging
import os
import re
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from bench import sites
from bench.workspace import stage_command
from tests.helpers import call_stage, python_env, tiny_params, with_configs, write_params
from tolstoy.config.params import section
from tolstoy.data.splits import choose_validation
from tolstoy.files import read_json
from tolstoy.training.checkpoints import observing_params

pytestmark = pytest.mark.slow  # end to end: training runs of 80 steps

EVAL_BLOCKS = 8  # a multiple of the batch: Trainer's evaluation drops an incomplete last batch
STEPS, EVERY = 80, 8  # 10 evaluations
PARAGRAPHS = 20
RISE = 0.05  # the least the last evaluation must exceed the best by


def same_loss(loss):
    """The evaluate stage's loss against Trainer's: metrics/eval.json rounds to 5 decimals, and both are
    fp32 means over the same blocks in other batches (a few float32 epsilons of the loss apart)."""
    return pytest.approx(loss, abs=5e-6 + 4e-6 * abs(loss))


def small_params(urls=()):
    params = tiny_params(list(urls))
    params["clean"].update(dedup=False)  # the training paragraph repeats
    params["tokenize"].update(span_chars=1, val_fraction=0.3)  # a span per line: the heading, then each paragraph
    params["model"].update(n_layer=2, n_embd=128, n_head=2)
    params["train"].update(
        max_steps=STEPS,
        lr=0.01,
        lr_scheduler="constant",
        warmup_steps=0,
        eval_steps=EVERY,
        save_steps=EVERY,
        logging_steps=EVERY,
        eval_blocks=EVAL_BLOCKS,
    )
    params["evaluate"].update(max_blocks=EVAL_BLOCKS)
    return params


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One short fixture page, cleaned, tokenized: one paragraph repeated where tokenize draws
    training spans, soon memorised, and distinct paragraphs where it draws validation spans."""
    directory = tmp_path_factory.mktemp("small")
    params = small_params([(directory / "site/page.shtml").as_uri()])
    val_lines = choose_validation(
        1 + PARAGRAPHS, params["tokenize"]["val_fraction"], params["tokenize"]["seed"]
    )  # line 0: the heading
    memorised, *others = sites.paragraphs("small", 1 + PARAGRAPHS)
    paragraphs = [others[i] if 1 + i in val_lines else memorised for i in range(PARAGRAPHS)]
    (directory / "site").mkdir()
    (directory / "site/page.shtml").write_bytes(sites.page_html("Том 1", [("Глава 1", paragraphs)]).encode("cp1251"))
    write_params(with_configs(directory), params)
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        for stage in ("fetch", "clean", "tokenizer", "tokenize", "groups"):
            call_stage(stage)
    finally:
        os.chdir(cwd)
    cleaned = pd.read_parquet(directory / "data/clean/docs.parquet")["text"][0].split("\n")
    assert cleaned == ["Глава 1", *paragraphs], (
        "premise: the cleaned page is the heading and the paragraphs, a line each"
    )
    val_chars = sum(len(line) for i, line in enumerate(cleaned) if i in val_lines)
    tokens = read_json(directory / "data/tokens/meta.json")["val"]
    assert tokens["blocks"] >= EVAL_BLOCKS and 0 <= tokens["chars"] - val_chars < len(val_lines), (
        f"premise: the validation split is the distinct paragraphs ({tokens})"
    )
    return directory


def overfit_copy(small, directory, **train_values):
    shutil.copytree(small, directory)
    params = small_params()
    params["train"].update(train_values)
    write_params(directory, params)
    return directory


def logged_evals(directory):
    rows = (directory / "metrics/train/plots/metrics/eval/loss.tsv").read_text().splitlines()[1:]
    return {int(row.split("\t")[0]): float(row.split("\t")[1]) for row in rows}


def train_and_evaluate(directory, monkeypatch, caplog):
    monkeypatch.chdir(directory)
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    call_stage("evaluate")
    return read_json("metrics/eval.json")["val_loss"], read_json("metrics/train_cost.json")["outcome"]


def test_the_step_with_the_lowest_validation_loss_is_exported(small, tmp_path, monkeypatch, caplog):
    directory = overfit_copy(small, tmp_path / "best", save_total_limit=1)
    exported, outcome = train_and_evaluate(directory, monkeypatch, caplog)
    evals = logged_evals(directory)
    best = min(evals, key=evals.get)
    assert evals[STEPS] > evals[best] + RISE, f"premise: training raises the validation loss {evals}"
    assert exported == same_loss(evals[best])
    assert outcome == {
        "steps": STEPS,
        "stopped": f"max_steps reached ({STEPS})",
        "stopped_by": "max_steps",
        "kept": "best",
        "kept_step": best,
        "kept_eval_loss": pytest.approx(evals[best], abs=1e-6),
        "kept_bits_per_char": outcome["kept_bits_per_char"],
        "evaluations": STEPS // EVERY,
    }
    assert (
        f"train: step {best} of {STEPS} kept (the lowest validation loss of {STEPS // EVERY} evaluations" in caplog.text
    )
    assert f"Exported: step {best} of {STEPS} kept" in (directory / "models/model/README.md").read_text(
        encoding="utf-8"
    )
    # save_total_limit=1 never deletes the best checkpoint; at the end Trainer deletes the last one
    assert (directory / f"models/checkpoints/checkpoint-{best}").is_dir()
    assert not (directory / f"models/checkpoints/checkpoint-{STEPS}").exists()
    caplog.clear()  # ... and the finished run still stands by its final/
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "holds the finished run" in caplog.text


def test_keep_last_exports_the_last_step(small, tmp_path, monkeypatch, caplog):
    directory = overfit_copy(small, tmp_path / "last", keep="last", save_steps=2 * EVERY)
    exported, outcome = train_and_evaluate(directory, monkeypatch, caplog)
    evals = logged_evals(directory)
    assert evals[STEPS] > min(evals.values()) + RISE, f"premise: training raises the validation loss {evals}"
    assert exported == same_loss(evals[STEPS])
    assert outcome["kept_step"] == STEPS and outcome["kept"] == "last"


def test_patience_stops_early_and_says_so(small, tmp_path, monkeypatch, caplog):
    directory = overfit_copy(small, tmp_path / "patience", patience=2)
    exported, outcome = train_and_evaluate(directory, monkeypatch, caplog)
    evals = logged_evals(directory)
    best = min(evals, key=evals.get)
    assert outcome["steps"] == max(evals) == best + 2 * EVERY < STEPS
    assert (
        outcome["stopped"] == f"no lower validation loss in 2 evaluations after step {best}"
        and outcome["kept_step"] == best
    )
    assert outcome["stopped_by"] == "patience"
    assert f"stopped: no lower validation loss in 2 evaluations after step {best}" in caplog.text
    assert exported == same_loss(evals[best])
    # a re-run with nothing changed restores the early-stopped run, it does not train on
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "holds the finished run" in caplog.text
    # killed while exporting: the checkpoint it stopped at stands only through final/, so the
    # stretch before it is trained again, to the same stop
    for path in ("models/checkpoints/final", "models/model"):
        shutil.rmtree(directory / path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    resumed = re.search(r"resuming from models/checkpoints/checkpoint-(\d+)", caplog.text)
    assert resumed and int(resumed[1]) < outcome["steps"], caplog.text[-2000:]
    again = read_json("metrics/train_cost.json")["outcome"]
    assert {
        **again,
        "kept_eval_loss": pytest.approx(outcome["kept_eval_loss"], rel=1e-4),
        "kept_bits_per_char": pytest.approx(outcome["kept_bits_per_char"], rel=1e-4),
    } == outcome


def test_killed_after_its_best_checkpoint_resumes_to_the_same_model(small, tmp_path, monkeypatch, caplog):
    reference = overfit_copy(small, tmp_path / "reference")
    train_and_evaluate(reference, monkeypatch, caplog)
    best = read_json(reference / "metrics/train_cost.json")["outcome"]["kept_step"]
    assert best < STEPS - EVERY, "premise: the best step comes before the kill"
    killed = overfit_copy(small, tmp_path / "killed")
    process = subprocess.Popen(
        [*stage_command("train"), "--process"],
        cwd=killed,
        env=python_env(),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "killed.log", "w"),
    )
    while (
        not (killed / f"models/checkpoints/checkpoint-{best + EVERY}/sealed.json").exists() and process.poll() is None
    ):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (killed / "models/checkpoints/final").exists(), "killed too late"
    caplog.clear()
    train_and_evaluate(killed, monkeypatch, caplog)
    resumed = re.search(r"resuming from models/checkpoints/checkpoint-(\d+)", caplog.text)
    assert resumed and int(resumed[1]) > best, caplog.text[-2000:]
    assert read_json(killed / "metrics/train_cost.json")["outcome"]["kept_step"] == best
    reference_weights, resumed = (
        load_file(reference / "models/model/model.safetensors"),
        load_file(killed / "models/model/model.safetensors"),
    )
    for name, tensor in reference_weights.items():
        assert torch.allclose(resumed[name], tensor, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("keep, patience, counted", [("best", 0, True), ("last", 3, True), ("last", 0, False)])
def test_the_evaluation_schedule_keys_checkpoints_when_it_chooses_the_model(keep, patience, counted):
    train = section("train", {**tiny_params([])["train"], "keep": keep, "patience": patience})
    assert ({"eval_steps", "eval_blocks", "save_steps"} & observing_params(train) == set()) == counted
