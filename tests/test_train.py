"""The train stage: params refused before training, what a run logs and exports, several processes,
fine-tuning, bf16, the loss."""

import fcntl
import functools
import logging
import math
import os
import pty
import re
import shutil
import struct
import subprocess
import termios

import pytest
import torch

from bench.workspace import stage_command
from tests.helpers import (
    ROOT,
    accelerate_config,
    call_stage,
    differing_weights,
    loss_curve,
    needs_cuda,
    params_with,
    python_env,
    run,
    train_copy,
    weights,
    write_params,
)
from tolstoy import StageError, device
from tolstoy.config.params import section
from tolstoy.files import read_json
from tolstoy.training import launcher as launch


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("model", {"n_embd": 30, "n_head": 4}, "model.n_embd=30 must be divisible by model.n_head=4"),
        ("model", {"n_positions": 16}, "tokenize.block_size=32 must be <= the model's context model.n_positions=16"),
        ("train", {"lr": 0}, "train.lr=0 must be a number > 0"),
        ("train", {"max_steps": 0, "epochs": 0}, "one must be positive"),
        ("train", {"batch_size": "eight"}, "train.batch_size='eight' must be an integer >= 1"),
        ("train", {"precision": "fp8"}, "train.precision='fp8' must be one of"),
    ],
)
def test_invalid_params_are_refused_before_training(built_copy, section, values, message):
    """By the stage's command, before it starts a training process."""
    from stages.train import main as train_command

    before = weights()
    write_params(".", params_with(**{section: values}))
    with pytest.raises(StageError, match=message):
        train_command(stage_command("train")[3:])
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
    assert sorted(p.name for p in (built / "models/checkpoints").glob("checkpoint-*")) == [
        "checkpoint-4",
        "checkpoint-8",
    ]


def test_the_figures_runs_are_compared_by_come_from_the_cost_record(built):
    cost, compared = read_json(built / "metrics/train_cost.json"), read_json(built / "metrics/train.json")
    assert compared == {
        "train_seconds": cost["actual"]["seconds"],
        "train_tokens_per_sec": cost["actual"]["tokens_per_sec"],
        "kept_step": 8,
        "stopped_by": "max_steps",
    }
    tokens, speed = 8 * 4 * 32, cost["actual"]["tokens_per_sec"]  # 8 steps of 4 blocks of 32 tokens
    assert abs(speed * cost["actual"]["seconds"] - tokens) <= speed * 0.05 + 1  # seconds are rounded to 0.1


def test_fine_tunes_a_local_base_model(built_copy):
    shutil.copytree("models/model", "bases/pretrained")
    params = params_with(
        model={"base": "bases/pretrained", "n_layer": 99}, train={"max_steps": 4}
    )  # shape comes from the base
    write_params(".", params)
    for stage in ("tokenizer", "tokenize", "train", "evaluate"):
        call_stage(stage)
    config = read_json("models/model/config.json")
    assert config["n_layer"] == 1 and config["n_embd"] == 32
    assert math.isfinite(read_json("metrics/eval.json")["val_loss"])


@pytest.mark.slow  # training processes started through accelerate launch
@pytest.mark.parametrize("config", ["single.yaml", "cpu-ddp.yaml"])
def test_an_error_in_a_training_process_is_one_line_and_exit_status_2(built_copy, config):
    shutil.copytree("models/model", "bases/pretrained")
    params = params_with(
        model={"base": "bases/pretrained"},
        tokenizer={"vocab_size": 300},
        train={"accelerate_config": accelerate_config(built_copy, config)},
    )
    write_params(".", {**params, "model": {**params["model"], "base": ""}})
    call_stage("tokenizer")  # a 300-token tokenizer, not the base's: found inside the training processes
    write_params(".", params)
    result = run(stage_command("train"), built_copy, check=False)
    assert result.returncode == 2, result.stderr
    assert (
        "error: models/tokenizer is not the tokenizer of model.base" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_micro_batches_with_accumulation_match_the_full_batch(built, tmp_path, monkeypatch):
    """fp32 (tiny_params): the same arithmetic up to summation order."""
    full = train_copy(built, tmp_path / "full", batch_size=4, grad_accum=1)
    micro = train_copy(built, tmp_path / "micro", batch_size=2, grad_accum=2)
    for directory in (full, micro):
        monkeypatch.chdir(directory)
        call_stage("train")
    assert (
        differing_weights(weights(micro / "models/model"), weights(full / "models/model"), rtol=1e-4, atol=1e-5) == []
    )


@pytest.mark.slow  # two training processes
def test_two_processes_match_one_and_only_the_main_one_writes(built, tmp_path):
    one = train_copy(built, tmp_path / "one", batch_size=4, max_steps=8, logging_steps=1)
    two = train_copy(
        built,
        tmp_path / "two",
        batch_size=2,
        max_steps=8,
        logging_steps=1,  # same global batch
        accelerate_config="configs/accelerate/cpu-ddp.yaml",
    )  # on the CPU also where there is a GPU
    accelerate_config(two, "cpu-ddp.yaml")  # on a free port
    run([*stage_command("train"), "--process"], one, env=dict(python_env(), ACCELERATE_USE_CPU="true"))
    ddp = run(stage_command("train"), two)
    assert ddp.stderr.count(" of 8 kept (") == 1  # one summary line: the other rank is quiet

    def curve(d):
        return [
            float(r.split("\t")[1])
            for r in (d / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
        ]

    assert len(curve(two)) == 8  # no duplicated DVCLive rows
    assert curve(two) == pytest.approx(curve(one), rel=1e-3)
    assert (
        read_json(two / "metrics/train_cost.json")["estimate"]["tokens"]
        == read_json(one / "metrics/train_cost.json")["estimate"]["tokens"]
    )
    assert sorted(p.name for p in (two / "models").iterdir()) == ["checkpoints", "model", "tokenizer"]
    assert not list((two / "models").glob(".*"))  # no temporaries of a second writer


def test_bf16_training_on_any_cpu(built, tmp_path, monkeypatch):
    """bf16 autocast runs on every CPU (emulated where it is not native): the bf16 path is exercised
    here whatever this machine's auto choice, and micro-batches agree with the full batch to bf16 precision."""
    settings = dict(
        precision="bf16", max_steps=4, logging_steps=1, eval_steps=100, save_steps=100
    )  # emulated bf16 is slow
    full = train_copy(built, tmp_path / "full", batch_size=4, grad_accum=1, **settings)
    micro = train_copy(built, tmp_path / "micro", batch_size=2, grad_accum=2, **settings)
    for directory in (full, micro):
        monkeypatch.chdir(directory)
        call_stage("train")
    assert all(
        tensor.dtype == torch.float32 for tensor in weights(full / "models/model").values()
    )  # master weights stay fp32
    assert all(math.isfinite(loss) for loss in loss_curve(full)) and len(loss_curve(full)) == 4
    assert loss_curve(micro) == pytest.approx(loss_curve(full), rel=2e-2)  # bf16 keeps 8 bits of mantissa


@needs_cuda
def test_a_gpu_run_learns_what_the_cpu_run_learns(built, tmp_path, monkeypatch, caplog):
    """Precision chosen on the GPU by measurement, compiled: the loss curve follows the fp32 CPU run of
    `built` (same initial weights, same batches) to bf16 precision; the model is saved as fp32 for any device."""
    gpu = train_copy(built, tmp_path / "gpu", precision="auto", compile=True)
    monkeypatch.chdir(gpu)
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert re.search(r"(bf16|fp16|fp32), compiled \(by measurement\)", caplog.text)
    assert loss_curve(gpu) == pytest.approx(loss_curve(built), rel=3e-2)
    assert all(tensor.dtype == torch.float32 and tensor.device.type == "cpu" for tensor in weights().values())
    cost = read_json("metrics/train_cost.json")
    assert set(cost["estimate"]["measured"]) == {name + "+compile" for name in device.precision_candidates("auto")}
    assert all(candidate["peak_gib"] > 0 for candidate in cost["estimate"]["measured"].values())
    # the GPU memory training allocated, against the probe's step plus AdamW's moments
    assert cost["actual"]["peak_gib"] == pytest.approx(cost["estimate"]["peak_gib"], rel=0.25)


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs/accelerate").glob("*.yaml")))
def test_every_training_process_is_told_a_configs_use_cpu(config, tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    env = launch.process_env(ROOT / "configs/accelerate" / config, tmp_path / "error")
    assert env.get("ACCELERATE_USE_CPU") == (
        "true" if load_config_from_file(str(ROOT / "configs/accelerate" / config)).use_cpu else None
    )


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs/accelerate").glob("*.yaml")))
def test_accelerate_configs_load_and_say_what_to_edit(config):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "configs/accelerate" / config
    loaded = load_config_from_file(str(path))
    assert loaded.num_processes >= loaded.num_machines >= 1
    if not loaded.use_cpu and loaded.num_processes > 1:  # GPU layouts depend on the machines they run on
        assert "EDIT" in path.read_text()


@pytest.mark.parametrize("block_size", [64, 256])
def test_trainers_evaluation_loss_is_the_evaluate_stages(built, tmp_path, block_size):
    """The mean over predicted tokens (block_size - 1 per block) in both, on the same weights and blocks."""
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from tolstoy.evaluation.scores import validation_loss
    from tolstoy.model.build import build_model

    tokenizer = AutoTokenizer.from_pretrained(built / "models/tokenizer")
    model_params = section("model", params_with(model={"n_positions": 256})["model"])
    torch.manual_seed(0)
    model = build_model(model_params, tokenizer, block_size, "sdpa").eval()
    ids = torch.randint(len(tokenizer), (8, block_size), generator=torch.Generator().manual_seed(1)).numpy()
    blocks = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to="none", use_cpu=True)
    trainers = Trainer(model=model, args=args, eval_dataset=blocks).evaluate()["eval_loss"]
    assert trainers == pytest.approx(validation_loss(model, blocks, batch_size=4), abs=1e-5)


def test_the_training_forward_returns_the_models_loss_alone(built):
    """No logits leave the training forward; its loss, its signature (Trainer picks the dataset's
    columns by it) and the model accelerate unwraps are the model's own."""
    import inspect

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from transformers import AutoTokenizer

    from tolstoy.model.build import build_model

    tokenizer = AutoTokenizer.from_pretrained(built / "models/tokenizer")
    torch.manual_seed(0)
    model = build_model(section("model", params_with()["model"]), tokenizer, 64, "sdpa").eval()
    ids = torch.randint(len(tokenizer), (2, 64), generator=torch.Generator().manual_seed(1))
    trained = model(input_ids=ids, labels=ids)
    full = type(model).forward(model, input_ids=ids, labels=ids)
    rows = -(-len(tokenizer) // 64) * 64  # the vocabulary padded to whole tiles, the padding outside the loss
    assert trained.logits is None and full.logits.shape == (2, 64, rows) and rows > len(tokenizer)
    over_the_tokens = torch.nn.functional.cross_entropy(
        full.logits[:, :-1, : len(tokenizer)].flatten(0, 1), ids[:, 1:].flatten()
    )
    assert trained.loss.item() == pytest.approx(over_the_tokens.item(), rel=1e-6)
    assert inspect.signature(model.forward) == inspect.signature(type(model).forward.__get__(model))
    AcceleratorState._reset_state(reset_partial_state=True)  # this process's Trainers made theirs without bf16
    try:
        accelerator = Accelerator(cpu=True, mixed_precision="bf16")
        prepared = accelerator.prepare(model)
        assert prepared(input_ids=ids, labels=ids).logits is None
        unwrapped = accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)
        assert unwrapped(input_ids=ids, labels=ids).logits.shape == (2, 64, rows)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


NOISE = [
    "{'loss'",
    "'eval_loss'",
    "train_runtime",
    "Writing model shards",
    "Loading weights",
    "The used dataset had no length",
    "speedups for torchdynamo",
    "loss_type=None",
]


@pytest.mark.parametrize(
    "precision, compiled, padding",
    [
        ("fp32", False, 0),
        ("bf16", False, 0),
        pytest.param("fp32", True, 0, marks=pytest.mark.slow),  # compiles the model and its backward from cold
        ("fp32", False, 24),
        pytest.param("fp32", True, 24, marks=pytest.mark.slow),
    ],
)
def test_the_loss_is_transformers_loss_with_its_gradients(monkeypatch, precision, compiled, padding):
    """Eager over several chunks, or compiled whole; with ignored labels, and scaled by Trainer's
    num_items_in_batch: the loss and every gradient equal transformers' (fp32 to 1e-5 relative;
    bf16 matmuls to 2%). With `padding` rows past model.tokenizer_tokens, equal to transformers'
    loss of a model without them, and those rows get no gradient."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tolstoy.model import loss as causal_lm

    monkeypatch.setattr(causal_lm, "LOGITS_BYTES_PER_CHUNK", 4 * 1000 * 50)  # 50 rows a chunk
    torch.manual_seed(0)
    model = causal_lm.with_causal_lm_loss(
        GPT2LMHeadModel(GPT2Config(vocab_size=1000, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()
    )  # no dropout
    if padding:
        model.resize_token_embeddings(1000 + padding)  # transformers' loss is over the first 1000 rows alone, as before
        model.tokenizer_tokens = 1000
    ids = torch.randint(1000, (3, 64), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, 10:20] = -100
    items = (labels[:, 1:] != -100).sum()
    results = []
    ours = functools.partial(causal_lm.causal_lm_loss, model, ids, labels, num_items_in_batch=items)

    def reference_loss():
        logits = model(input_ids=ids).logits[..., :1000]
        return model.loss_function(logits, labels, 1000, num_items_in_batch=items)

    for loss_of in (reference_loss, torch.compile(ours) if compiled else ours):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_of()
        loss.backward()
        results.append((loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    (reference, reference_grads), (chunked, chunked_grads) = results
    tolerance = 1e-5 if precision == "fp32" else 2e-2
    assert chunked == pytest.approx(reference, rel=tolerance)
    for name, grad in reference_grads.items():
        assert (chunked_grads[name] - grad).abs().max() <= tolerance * grad.abs().max(), name
    assert not chunked_grads["transformer.wte.weight"][1000:].any()
    with torch.no_grad():
        assert causal_lm.causal_lm_loss(model, ids, labels).item() == pytest.approx(reference, rel=tolerance)


def test_an_mfu_over_100_percent_is_flagged_once_beside_its_peak(tmp_path, caplog):
    from types import SimpleNamespace

    import yaml

    from tolstoy.training.callbacks import LiveCallback, open_live

    live = open_live(tmp_path / "live", None)
    callback = LiveCallback(
        live, tokens_per_step=1000, flops_per_token=1e9, peak=2e9, val_chars_per_token=3.0
    )  # a peak far too low
    state = SimpleNamespace(is_world_process_zero=True, global_step=0)
    with caplog.at_level(logging.WARNING, logger="tolstoy"):
        callback.on_train_begin(None, state, None)
        for step in (1, 2, 3):
            state.global_step = step
            callback.on_log(None, state, None, logs={"loss": 1.0})
    flagged = [r.getMessage() for r in caplog.records if "over 100%" in r.getMessage()]
    assert len(flagged) == 1 and "0.002 TFLOP/s" in flagged[0]
    assert yaml.safe_load((tmp_path / "live/params.yaml").read_text())["mfu_peak_tflops"] == 0.002


@pytest.mark.slow  # compiles the training step
def test_the_train_log_reads_as_the_progress_of_one_run(built, tmp_path):
    directory = train_copy(
        built, tmp_path / "copy", compile=True
    )  # compiling on a CPU is what draws the torchdynamo warning
    trained = run(stage_command("train"), directory)
    evaluated = run(stage_command("evaluate"), directory)
    output = trained.stdout + trained.stderr + evaluated.stdout + evaluated.stderr
    assert [noise for noise in NOISE if noise in output] == []
    assert re.search(
        r"train: step 8/8, \d+:\d\d elapsed, 0:00 left; loss [\d.]+, val [\d.]+ bits/char, [\d,]+ tokens/s", output
    ), output
    assert re.search(r"train: step 4, validation loss [\d.]+ \([\d.]+ bits/char; best [\d.]+\)", output), output


def test_a_filtered_message_is_only_the_one_it_names(caplog):
    from tolstoy.training import run

    run.install_notices()
    arguments_log = logging.getLogger("transformers.training_args")
    with caplog.at_level(logging.WARNING, logger="transformers.training_args"):
        arguments_log.warning(
            "The speedups for torchdynamo mostly come with GPU Ampere or higher and which is not detected here."
        )
        arguments_log.warning("--save_steps is ignored: a real warning about this run")
    assert [record.getMessage() for record in caplog.records] == [
        "--save_steps is ignored: a real warning about this run"
    ]


def test_on_a_terminal_the_progress_is_one_live_line_with_the_evaluations_above_it(built, tmp_path):
    directory = train_copy(built, tmp_path / "copy")
    controller, terminal = pty.openpty()
    fcntl.ioctl(
        terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0)
    )  # 24 rows of 120 columns, as a terminal has a size
    process = subprocess.Popen(
        stage_command("train"), cwd=directory, env=python_env(), stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    output = b""
    while chunk := read_or_end(controller):
        output += chunk
    assert process.wait() == 0
    text = output.decode(errors="replace")
    assert re.search(r"\rtrain 8/8 \[\d\d:\d\d<00:00\], loss [\d.]+, val [\d.]+ bits/char, [\d,]+ tokens/s", text), text
    evaluations = re.findall(r"(.)\d\d:\d\d:\d\d tolstoy train: step \d, validation loss", text, flags=re.S)
    assert len(evaluations) == 2 and all(before in "\r\n" for before in evaluations), text  # each on a line of its own
    assert "elapsed" not in text  # the plain lines are for logs without a terminal


def read_or_end(controller):
    try:
        return os.read(controller, 65536)
    except OSError:  # the terminal's other end closed
        return b""
