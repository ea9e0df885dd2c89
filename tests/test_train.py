import logging
import math
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stages.training import launch, plan, resume
from stages.common import StageError, read_json, remove
from tests.conftest import ROOT, accelerate_config, call_stage, damage, file_bytes, python_env, run, tiny_params, write_params


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (python -m bench.gpu_check runs these on one)")


def params_with(**sections):
    params = tiny_params([])
    for section, values in sections.items():
        params[section].update(values)
    return params


def weights(directory="models/model"):
    return load_file(f"{directory}/model.safetensors")


@pytest.mark.parametrize("section, values, message", [
    ("model", {"n_embd": 30, "n_head": 4}, "model.n_embd=30 must be divisible by model.n_head=4"),
    ("model", {"n_positions": 16}, "tokenize.block_size=32 must be <= the model's context model.n_positions=16"),
    ("train", {"lr": 0}, "train.lr=0 must be a number > 0"),
    ("train", {"max_steps": 0, "epochs": 0}, "one must be positive"),
    ("train", {"batch_size": "eight"}, "train.batch_size='eight' must be an integer >= 1"),
    ("train", {"precision": "fp8"}, "train.precision='fp8' must be one of"),
])
def test_invalid_params_are_refused_before_training(built_copy, section, values, message):
    before = weights()
    write_params(".", params_with(**{section: values}))
    with pytest.raises(StageError, match=message):
        call_stage("train")
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
    (built_copy / "models/checkpoints/checkpoint-8/sealed.json").unlink()  # killed while saving: the seal is written last
    shutil.rmtree(built_copy / "models/checkpoints/final")  # ... so the run never finished
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "removing incomplete checkpoint models/checkpoints/checkpoint-8" in caplog.text
    assert "resuming from models/checkpoints/checkpoint-4" in caplog.text


@pytest.mark.parametrize("name, how", [("model.safetensors", "cut short"), ("optimizer.pt", "cut short"), ("optimizer.pt", "one bit flipped")])
def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_resumed(built_copy, caplog, name, how):
    uninterrupted = weights()
    damage(built_copy / "models/checkpoints/checkpoint-8" / name, how)
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    reason = "bytes, " if how == "cut short" else "is not the file that was saved"
    assert re.search(rf"checkpoint-8 fails verification: {name} (has [\d,]+ bytes, [\d,]+ when saved|is not the file that was saved)", caplog.text)
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
    assert sorted(p.name for p in (built_copy / "models/checkpoints").glob("corrupt-*")) == ["corrupt-checkpoint-4", "corrupt-checkpoint-8"]


def test_an_unreadable_fingerprint_starts_fresh_saying_so(built_copy, caplog):
    (built_copy / "models/checkpoints/fingerprint.json").write_text('{"model": {', encoding="utf-8")
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "models/checkpoints/fingerprint.json cannot be read (" in caplog.text
    assert "starting fresh: checkpoints in models/checkpoints were made with other" in caplog.text and "from the start" in caplog.text


def test_a_damaged_final_run_is_trained_again(built_copy, caplog):
    uninterrupted = weights()
    damage(built_copy / "models/checkpoints/final/model/model.safetensors", "one bit flipped")
    write_params(".", tiny_params([]))
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("train")
    assert "models/checkpoints/final fails verification: model/model.safetensors is not the file that was saved" in caplog.text
    assert "resuming from models/checkpoints/checkpoint-4" in caplog.text and (built_copy / "models/checkpoints/corrupt-final").is_dir()
    for key, tensor in uninterrupted.items():
        assert torch.allclose(weights()[key], tensor, rtol=1e-4, atol=1e-6), key


@pytest.mark.parametrize("section, values, what", [("model", {"n_layer": 2}, "model"), ("train", {"lr": 0.01}, "train")])
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


def test_fine_tunes_a_local_base_model(built_copy):
    shutil.copytree("models/model", "bases/pretrained")
    params = params_with(model={"base": "bases/pretrained", "n_layer": 99}, train={"max_steps": 4})  # shape comes from the base
    write_params(".", params)
    for stage in ("tokenizer", "tokenize", "train", "evaluate"):
        call_stage(stage)
    config = read_json("models/model/config.json")
    assert config["n_layer"] == 1 and config["n_embd"] == 32
    assert math.isfinite(read_json("metrics/eval.json")["val_loss"])


@pytest.mark.parametrize("config", ["single.yaml", "cpu-ddp.yaml"])
def test_an_error_in_a_training_process_is_one_line_and_exit_status_2(built_copy, config):
    shutil.copytree("models/model", "bases/pretrained")
    params = params_with(model={"base": "bases/pretrained"}, tokenizer={"vocab_size": 300}, train={"accelerate_config": str(accelerate_config(built_copy, config))})
    write_params(".", {**params, "model": {**params["model"], "base": ""}})
    call_stage("tokenizer")  # a 300-token tokenizer, not the base's: found inside the training processes
    write_params(".", params)
    result = run([sys.executable, "-m", "stages.training.launch"], built_copy, check=False)
    assert result.returncode == 2, result.stderr
    assert "error: models/tokenizer is not the tokenizer of model.base" in result.stderr and "Traceback" not in result.stderr


def train_copy(built, directory, **train_values):
    """A private copy of the built project, without checkpoints, with its own train params."""
    shutil.copytree(built, directory, ignore=shutil.ignore_patterns("checkpoints"))
    write_params(directory, params_with(train=train_values))
    return directory


def eval_loss(directory, monkeypatch):
    monkeypatch.chdir(directory)
    call_stage("evaluate")
    return read_json("metrics/eval.json")["val_loss"]


def test_killed_training_resumes_to_the_same_result(built, tmp_path, monkeypatch, caplog):
    settings = dict(max_steps=100, save_steps=4, logging_steps=4, eval_steps=50, keep="last")
    reference = train_copy(built, tmp_path / "reference", **settings)
    monkeypatch.chdir(reference)
    call_stage("train")
    killed = train_copy(built, tmp_path / "killed", **settings)
    process = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=killed, env=python_env(),
                               stdout=subprocess.DEVNULL, stderr=open(tmp_path / "killed.log", "w"))
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
    steps = [int(row.split("\t")[0]) for row in (killed / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(4, 101, 4))  # rows logged after the checkpoint were not duplicated


def test_micro_batches_with_accumulation_match_the_full_batch(built, tmp_path, monkeypatch):
    """fp32 (tiny_params): the same arithmetic up to summation order."""
    full = train_copy(built, tmp_path / "full", batch_size=4, grad_accum=1)
    micro = train_copy(built, tmp_path / "micro", batch_size=2, grad_accum=2)
    for directory in (full, micro):
        monkeypatch.chdir(directory)
        call_stage("train")
    for name, tensor in weights(full / "models/model").items():
        assert torch.allclose(weights(micro / "models/model")[name], tensor, rtol=1e-4, atol=1e-5), name


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
    explicit = {"precision": "fp32", "compile": False}
    best, choice = plan.choose_settings(model, explicit, micro_batch=2, grad_accum=1, block_size=32, steps=10**6)
    assert (best["precision"], best["compile"], choice["chosen_by"], list(choice["measured"])) == ("fp32", False, "params", ["fp32"])
    best, choice = plan.choose_settings(model, {"precision": "auto", "compile": "auto"}, micro_batch=2, grad_accum=1, block_size=32, steps=10)
    assert choice["chosen_by"] == "measurement"
    assert list(choice["measured"]) == plan.precision_candidates("auto")  # eager only: too short a run to compile
    fastest = min(choice["measured"], key=lambda name: choice["measured"][name]["expected_seconds"])
    assert plan.settings_name(best) == fastest


def test_auto_compile_counts_compilation_against_the_run_length():
    """A long run also times compiled steps; the expected run is warm-up plus steps at steady speed,
    and a compiled candidate must be COMPILE_MARGIN shorter to be chosen."""
    torch._dynamo.reset()  # compiled from cold, whatever this process compiled before
    best, choice = plan.choose_settings(tiny_model(), {"precision": "fp32", "compile": "auto"}, micro_batch=2, grad_accum=1, block_size=32, steps=10**6)
    eager, compiled = choice["measured"]["fp32"], choice["measured"]["fp32+compile"]
    assert compiled["warmup_seconds"] > eager["warmup_seconds"] + 1  # compilation
    for candidate in (eager, compiled):
        assert candidate["expected_seconds"] == pytest.approx(candidate["warmup_seconds"] + 10**6 * candidate["seconds_per_step"], rel=1e-3)
    assert best["compile"] == (compiled["expected_seconds"] * plan.COMPILE_MARGIN < eager["expected_seconds"])


def test_a_run_keeps_the_choice_its_checkpoints_were_made_with(tmp_path):
    made_with = lambda precision, lr=0.002: {"train": {"lr": lr, "precision": "auto"}, "runtime": {"precision": precision, "world_size": 1}}  # noqa: E731
    resume.mark(tmp_path, made_with("bf16"), {"precision": "bf16", "compile": True})
    assert resume.kept_choice(tmp_path, made_with(None)) == {"precision": "bf16", "compile": True}
    assert resume.kept_choice(tmp_path, made_with(None, lr=0.01)) is None  # another run: chosen afresh
    assert resume.kept_choice(tmp_path / "none", made_with(None)) is None
    best, choice = plan.choose_settings(tiny_model(), {"precision": "auto", "compile": "auto"}, 2, 1, 32, 10, kept={"precision": "fp32", "compile": True})
    assert (best["precision"], best["compile"], choice["chosen_by"]) == ("fp32", True, "checkpoints")


@pytest.mark.parametrize("batch_size", [32, 128])
def test_predicted_peak_memory_matches_measured_peak_rss(built, tmp_path, batch_size):
    directory = tmp_path / "memory"
    shutil.copytree(built, directory)
    params = params_with(model={"n_layer": 2, "n_embd": 128, "n_head": 2, "n_positions": 64},
                         train={"batch_size": batch_size, "max_steps": 2, "eval_steps": 100, "save_steps": 100})
    params["tokenize"]["block_size"] = 64
    write_params(directory, params)
    run([sys.executable, "-m", "stages.tokenize"], directory)
    # The model of CPU memory, also on a machine with a GPU. glibc's moving mmap threshold keeps a
    # varying part of freed tensors in the heap (the peak varies by up to a fifth between runs); with
    # the threshold fixed, freed tensors go back at once and the peak is the same in every run.
    cpu = dict(python_env(), ACCELERATE_USE_CPU="true", MALLOC_MMAP_THRESHOLD_="131072")
    run([sys.executable, "-m", "stages.train"], directory, env=cpu)  # a fresh process: its peak RSS is this run's
    cost = read_json(directory / "metrics/train_cost.json")
    assert cost["estimate"]["micro_batch"] == batch_size
    # what the arithmetic needs, without the heap's cache: the prediction covers it and the cache (measured 18-22% here)
    assert cost["actual"]["peak_gib"] <= cost["estimate"]["peak_gib"] <= 1.35 * cost["actual"]["peak_gib"]
    assert cost["estimate"]["checkpoint_mib"] == pytest.approx(cost["actual"]["checkpoint_mib"], rel=0.15)


def test_two_processes_match_one_and_only_the_main_one_writes(built, tmp_path):
    one = train_copy(built, tmp_path / "one", batch_size=4, max_steps=8, logging_steps=1)
    two = train_copy(built, tmp_path / "two", batch_size=2, max_steps=8, logging_steps=1,  # same global batch
                     accelerate_config=str(accelerate_config(tmp_path, "cpu-ddp.yaml")))  # on the CPU also where there is a GPU
    run([sys.executable, "-m", "stages.train"], one, env=dict(python_env(), ACCELERATE_USE_CPU="true"))
    ddp = run([sys.executable, "-m", "stages.training.launch"], two)
    assert ddp.stderr.count(" of 8 kept (") == 1  # one summary line: the other rank is quiet
    curve = lambda d: [float(r.split("\t")[1]) for r in (d / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]  # noqa: E731
    assert len(curve(two)) == 8  # no duplicated DVCLive rows
    assert curve(two) == pytest.approx(curve(one), rel=1e-3)
    assert read_json(two / "metrics/train_cost.json")["estimate"]["tokens"] == read_json(one / "metrics/train_cost.json")["estimate"]["tokens"]
    assert sorted(p.name for p in (two / "models").iterdir()) == ["checkpoints", "model", "tokenizer"]
    assert not list((two / "models").glob(".*"))  # no temporaries of a second writer


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


def loss_curve(directory):
    rows = (Path(directory) / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
    return [float(row.split("\t")[1]) for row in rows]


def test_bf16_training_on_any_cpu(built, tmp_path, monkeypatch):
    """bf16 autocast runs on every CPU (emulated where it is not native): the bf16 path is exercised
    here whatever this machine's auto choice, and micro-batches agree with the full batch to bf16 precision."""
    settings = dict(precision="bf16", max_steps=4, logging_steps=1, eval_steps=100, save_steps=100)  # emulated bf16 is slow
    full = train_copy(built, tmp_path / "full", batch_size=4, grad_accum=1, **settings)
    micro = train_copy(built, tmp_path / "micro", batch_size=2, grad_accum=2, **settings)
    for directory in (full, micro):
        monkeypatch.chdir(directory)
        call_stage("train")
    assert all(tensor.dtype == torch.float32 for tensor in weights(full / "models/model").values())  # master weights stay fp32
    assert all(math.isfinite(loss) for loss in loss_curve(full)) and len(loss_curve(full)) == 4
    assert loss_curve(micro) == pytest.approx(loss_curve(full), rel=2e-2)  # bf16 keeps 8 bits of mantissa


@needs_cuda
def test_gpu_policies_and_use_cpu_in_the_accelerate_config(monkeypatch):
    assert plan.device() == "cuda"
    assert plan.precision_candidates("auto") == ["bf16" if torch.cuda.is_bf16_supported() else "fp16", "fp32"]
    assert plan.memory_budget(processes_here=2) == torch.cuda.mem_get_info()[1]
    datasheet = [peaks["bf16"] for model, peaks in plan.GPU_PEAK_TFLOPS.items() if model in torch.cuda.get_device_name() and "bf16" in peaks]
    assert plan.peak_flops("bf16") == datasheet[0] * 1e12 if datasheet else plan.peak_flops("bf16") > 1e12  # measured: any GPU passes 1 TFLOP/s
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # what the train stage's launcher sets for a config with use_cpu: true
    assert plan.device() == "cpu" and "fp16" not in plan.precision_candidates("auto")


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
    assert set(cost["estimate"]["measured"]) == {name + "+compile" for name in plan.precision_candidates("auto")}
    assert 0 < cost["actual"]["peak_gib"] <= cost["estimate"]["peak_gib"]  # GPU memory; the plan is an upper bound there


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs/accelerate").glob("*.yaml")))
def test_every_training_process_is_told_a_configs_use_cpu(config, tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    env = launch.process_env(ROOT / "configs/accelerate" / config, tmp_path / "error")
    assert env.get("ACCELERATE_USE_CPU") == ("true" if load_config_from_file(str(ROOT / "configs/accelerate" / config)).use_cpu else None)


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

    from stages.evaluate import validation_loss
    from stages.train import build_model

    tokenizer = AutoTokenizer.from_pretrained(built / "models/tokenizer")
    model_params = params_with(model={"n_positions": 256})["model"]
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

    from stages.train import build_model

    tokenizer = AutoTokenizer.from_pretrained(built / "models/tokenizer")
    torch.manual_seed(0)
    model = build_model(params_with()["model"], tokenizer, 64, "sdpa").eval()
    ids = torch.randint(len(tokenizer), (2, 64), generator=torch.Generator().manual_seed(1))
    trained = model(input_ids=ids, labels=ids)
    full = type(model).forward(model, input_ids=ids, labels=ids)
    assert trained.logits is None and full.logits.shape == (2, 64, len(tokenizer))
    assert trained.loss.item() == full.loss.item()
    assert inspect.signature(model.forward) == inspect.signature(type(model).forward.__get__(model))
    AcceleratorState._reset_state(reset_partial_state=True)  # this process's Trainers made theirs without bf16
    try:
        accelerator = Accelerator(cpu=True, mixed_precision="bf16")
        prepared = accelerator.prepare(model)
        assert prepared(input_ids=ids, labels=ids).logits is None
        unwrapped = accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)
        assert unwrapped(input_ids=ids, labels=ids).logits.shape == (2, 64, len(tokenizer))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
