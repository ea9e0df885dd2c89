"""The train stage's plan: micro-batches that fit, precision and compile by measurement, peak memory, GPU policies."""

import shutil

import pytest
import torch

from bench.workspace import stage_command
from tests.helpers import needs_cuda, params_with, python_env, run, write_params
from tolstoy import StageError, device
from tolstoy.files import read_json
from tolstoy.training import checkpoints, plan


def test_micro_batch_plan():
    predict = lambda micro: 1e9 + micro * 1e9  # noqa: E731 - bytes at a micro-batch
    assert plan.plan_micro_batch(8, predict, budget=10e9) == 8
    assert plan.plan_micro_batch(8, predict, budget=5e9) == 2  # 3 would fit too but does not divide 8
    with pytest.raises(StageError, match=r"about 1.9 GiB even one block at a time, and 1.9 GiB is available"):
        plan.plan_micro_batch(8, predict, budget=2e9)


def tiny_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=400, n_positions=32, n_embd=32, n_layer=1, n_head=2))


def test_explicit_settings_are_obeyed_and_auto_is_measured():
    model = tiny_model()
    best, choice = plan.choose_settings(model, "fp32", False, micro_batch=2, grad_accum=1, block_size=32, steps=10**6)
    assert (best["precision"], best["compile"], choice["chosen_by"], list(choice["measured"])) == (
        "fp32",
        False,
        "params",
        ["fp32"],
    )
    best, choice = plan.choose_settings(model, "auto", "auto", micro_batch=2, grad_accum=1, block_size=32, steps=10)
    assert choice["chosen_by"] == "measurement"
    assert list(choice["measured"]) == device.precision_candidates("auto")  # eager only: too short a run to compile
    fastest = min(choice["measured"], key=lambda name: choice["measured"][name]["expected_seconds"])
    assert plan.settings_name(best) == fastest


def test_the_probe_times_a_training_step_even_of_a_model_loaded_for_inference():
    model = tiny_model().eval()  # as from_pretrained loads a base: dropout off
    seconds, _, peak = plan.probe_micro_batch(model, 2, 32, "fp32", False, min_seconds=0)
    assert model.training and seconds > 0
    assert (peak is not None) == device.on_gpu()  # GPU memory the passes allocated; a CPU has no such figure


@pytest.mark.slow  # compiles the training step
def test_auto_compile_counts_compilation_against_the_run_length():
    """A long run also times compiled steps; the expected run is warm-up plus steps at steady speed,
    and a compiled candidate must be COMPILE_MARGIN shorter to be chosen."""
    torch._dynamo.reset()  # compiled from cold, whatever this process compiled before
    best, choice = plan.choose_settings(
        tiny_model(), "fp32", "auto", micro_batch=2, grad_accum=1, block_size=32, steps=10**6
    )
    eager, compiled = choice["measured"]["fp32"], choice["measured"]["fp32+compile"]
    assert (
        compiled["warmup_seconds"] > eager["warmup_seconds"]
    )  # compilation (however fast, with a warm inductor cache)
    for candidate in (eager, compiled):
        assert candidate["expected_seconds"] == pytest.approx(
            candidate["warmup_seconds"] + 10**6 * candidate["seconds_per_step"], rel=1e-3
        )
    assert best["compile"] == (compiled["expected_seconds"] * plan.COMPILE_MARGIN < eager["expected_seconds"])


def test_the_peak_probe_takes_a_twentieth_of_the_run_and_is_never_one_cold_call(monkeypatch):
    from tolstoy.training.run import peak_probe_seconds

    assert (peak_probe_seconds({"seconds": 4.0}), peak_probe_seconds({"seconds": 3600})) == (0.2, 1.5)
    calls, timed = [], device.timed
    monkeypatch.setattr(device, "timed", lambda step, repeats: calls.append(repeats) or timed(step, repeats))
    assert device.on_gpu() or (device.peak_flops("fp32", seconds=0) > 0 and calls == [3])  # the smallest size alone


def test_a_run_keeps_the_choice_its_checkpoints_were_made_with(tmp_path):
    run_fingerprint = lambda lr=0.002: {"train": {"lr": lr, "precision": "auto"}, "runtime": {"world_size": 1}}  # noqa: E731
    checkpoints.record_fingerprint(tmp_path, run_fingerprint(), {"precision": "bf16", "compile": True})
    assert checkpoints.settings_of_run(tmp_path, run_fingerprint()) == {"precision": "bf16", "compile": True}
    assert checkpoints.settings_of_run(tmp_path, run_fingerprint(lr=0.01)) is None  # another run: chosen afresh
    assert checkpoints.settings_of_run(tmp_path / "none", run_fingerprint()) is None


@pytest.mark.slow  # a training process per batch size
@pytest.mark.parametrize("batch_size", [32, 128])
def test_predicted_peak_memory_matches_measured_peak_rss(built, tmp_path, batch_size):
    directory = tmp_path / "memory"
    shutil.copytree(built, directory)
    params = params_with(
        model={"n_layer": 2, "n_embd": 128, "n_head": 2, "n_positions": 64},
        train={"batch_size": batch_size, "max_steps": 2, "eval_steps": 100, "save_steps": 100},
    )
    params["tokenize"]["block_size"] = 64
    write_params(directory, params)
    run(stage_command("tokenize"), directory)
    # The model of CPU memory, also on a machine with a GPU. glibc's moving mmap threshold keeps a
    # varying part of freed tensors in the heap (the peak varies by up to a fifth between runs); with
    # the threshold fixed, freed tensors go back at once and the peak is the same in every run.
    cpu = dict(python_env(), ACCELERATE_USE_CPU="true", MALLOC_MMAP_THRESHOLD_="131072")
    run([*stage_command("train"), "--process"], directory, env=cpu)  # a fresh process: its peak RSS is this run's
    cost = read_json(directory / "metrics/train_cost.json")
    assert cost["estimate"]["micro_batch"] == batch_size
    # what the arithmetic needs, without the heap's cache: the prediction covers it and the cache (measured 18-22% here)
    assert cost["actual"]["peak_gib"] <= cost["estimate"]["peak_gib"] <= 1.35 * cost["actual"]["peak_gib"]
    assert cost["estimate"]["checkpoint_mib"] == pytest.approx(cost["actual"]["checkpoint_mib"], rel=0.15)


@needs_cuda
def test_gpu_policies_and_use_cpu_in_the_accelerate_config(monkeypatch):
    assert device.torch_device() == "cuda"
    assert device.precision_candidates("auto") == ["bf16" if torch.cuda.is_bf16_supported() else "fp16", "fp32"]
    assert plan.memory_budget(processes_here=2) == torch.cuda.mem_get_info()[1]
    datasheet = [
        peaks["bf16"]
        for model, peaks in device.GPU_PEAK_TFLOPS.items()
        if model in torch.cuda.get_device_name() and "bf16" in peaks
    ]
    assert (
        device.peak_flops("bf16") == datasheet[0] * 1e12 if datasheet else device.peak_flops("bf16") > 1e12
    )  # measured: any GPU passes 1 TFLOP/s
    monkeypatch.setenv(
        "ACCELERATE_USE_CPU", "true"
    )  # what the train stage's launcher sets for a config with use_cpu: true
    assert device.torch_device() == "cpu" and "fp16" not in device.precision_candidates("auto")
