"""Performance benchmark: this project's training settings against the tutorial's recipe (speed,
and bits per character at equal wall time), where a step's time goes, data preparation against the tutorial's
datasets.map + group_texts, pipeline overhead, generation.

    python -m bench.performance [--only train,profile,quality,prep,pipeline,generate] [--json bench/results/performance.json]

Needs a finished default `dvc repro` in this checkout (data/, models/) and, for data preparation,
../shared/corpus/ruslit/prose. Every comparison is measured in the same run, on this machine.
"""
import argparse
import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

from stages import tokenize
from stages.blocks import Blocks, bits_per_char
from stages.common import read_json
from stages.documents import iter_documents
from stages.evaluate import validation_loss
from stages.tokenizer import train_bpe
from stages.train.arguments import speed_settings
from stages.train.device import peak_flops, precision_candidates
from stages.train.model import loss_only
from stages.train.plan import flops_per_token

ROOT = Path(__file__).resolve().parent.parent
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
PROSE = ROOT.parent / "shared/corpus/ruslit/prose"


class StepTimer(TrainerCallback):
    """Per-step losses, and the wall time at the end of every step. Steady state is the second half
    of the steps: compilation, recompilations and allocator warm-up all fall in the first half,
    and what the first half took beyond its steady-state share is reported as warm-up seconds."""

    def __init__(self):
        self.losses, self.began, self.step_ends = [], None, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available() and state.global_step in (state.max_steps // 2, state.max_steps):
            torch.cuda.synchronize()  # the GPU's queue drained at the two ends of the steady-state window
        self.step_ends.append(time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self.losses.append(logs["loss"])

    def steady(self):
        """(seconds per step in steady state, warm-up seconds)."""
        half = len(self.step_ends) // 2
        per_step = (self.step_ends[-1] - self.step_ends[half - 1]) / (len(self.step_ends) - half)
        return per_step, max(0.0, self.step_ends[half - 1] - self.began - half * per_step)


@functools.lru_cache
def measured_peak(precision):
    """Measured once, before anything compiles: torch.compile leaves busy worker processes behind."""
    return peak_flops(precision)


def train_run(config, blocks, steps, recipe, batch=8, log_every=1, precision="fp32", compile_model=False):
    """tokens/s (steady state), warm-up seconds, MFU and losses (every `log_every` steps) of `steps`
    optimizer steps of `batch` blocks: the tutorial's recipe, or this project's settings with the given precision and compile."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config) if recipe == "tutorial" else loss_only(GPT2LMHeadModel(ours(config)))
    common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch, learning_rate=5e-5, warmup_steps=200, max_steps=steps,
                  logging_steps=log_every, report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(), seed=0, disable_tqdm=True)
    if recipe == "tutorial":  # the tutorial's Trainer: library defaults, fp32
        precision, args = "fp32", TrainingArguments(**common)
    else:  # this project's train stage settings
        args = TrainingArguments(**common, **speed_settings(precision, compile_model))
    timer = StepTimer()
    Trainer(model=model, args=args, train_dataset=blocks, callbacks=[timer]).train()
    seconds_per_step, warmup_seconds = timer.steady()
    tokens_per_sec = batch * config.n_positions / seconds_per_step
    n_params = sum(p.numel() for p in model.parameters()) - config.n_positions * config.n_embd
    mfu = tokens_per_sec * flops_per_token(n_params, config.n_layer, config.n_embd, config.n_positions) / measured_peak(precision)
    return {"recipe": recipe, "precision": precision, "compile": compile_model, "tokens_per_sec": round(tokens_per_sec, 1), "mfu_%": round(100 * mfu, 1),
            "warmup_s": round(warmup_seconds, 1), "seconds_per_step": seconds_per_step, "losses": timer.losses}


def ours(config):
    """The config as the train stage builds it: dropout from params (model.dropout) instead of GPT2Config's 0.1."""
    return GPT2Config(**{**config.to_dict(), **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), PARAMS["model"]["dropout"])})


# The tutorial's configuration: GPT-2 6 x 384, block 1024, a 30k vocabulary trained on the same documents.
TUTORIAL_CONFIG = GPT2Config(vocab_size=30000, n_positions=1024, n_embd=384, n_layer=6, n_head=6)


@functools.lru_cache
def corpus_texts():
    return [doc["text"] for doc in iter_documents(ROOT / "data/clean/docs.parquet", ["text"])]


@functools.lru_cache
def tutorial_tokenizer():
    return train_bpe(iter(corpus_texts()), vocab_size=TUTORIAL_CONFIG.vocab_size, min_frequency=2)


def encode_with_eot(tokenizer, texts):
    return np.array([i for text in texts for i in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]], dtype=np.int64)


def block_list(ids, block_size):
    n = len(ids) // block_size
    return [{"input_ids": ids[i * block_size:(i + 1) * block_size].astype(np.int64), "labels": ids[i * block_size:(i + 1) * block_size].astype(np.int64)} for i in range(n)]


@functools.lru_cache
def bench_shapes():
    """(name, config, blocks, bench steps, batch, planned steps) of the default model and the tutorial's shape."""
    model_params = PARAMS["model"]
    default = GPT2Config(vocab_size=PARAMS["tokenizer"]["vocab_size"], n_positions=PARAMS["tokenize"]["block_size"], n_embd=model_params["n_embd"],
                         n_layer=model_params["n_layer"], n_head=model_params["n_head"])
    default_blocks = Blocks(ROOT / "data/tokens", "train", limit=512)
    ids = encode_with_eot(tutorial_tokenizer(), corpus_texts()[:2])
    tutorial_steps = 30 * len(encode_with_eot(tutorial_tokenizer(), corpus_texts())) // (1024 * 8)
    return [("default", default, default_blocks, 40, 8, PARAMS["train"]["max_steps"]),
            ("6x384/1024/30k", TUTORIAL_CONFIG, block_list(ids, 1024), 8, 4, tutorial_steps)]


def bench_profile(results):
    """Where an eager forward+backward of this project's model goes, by operator self time (torch.profiler, fp32, two steps after one warm-up)."""
    rows = []
    for name, config, blocks, _, batch, _ in bench_shapes():
        torch.manual_seed(0)
        model = GPT2LMHeadModel(ours(config))
        ids = torch.as_tensor(np.stack([blocks[i]["input_ids"] for i in range(batch)]))
        step = lambda: model(input_ids=ids, labels=ids).loss.backward()  # noqa: E731
        step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            step()
            step()
        events = profile.key_averages()
        total = sum(event.self_cpu_time_total for event in events)
        top = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[:8]
        rows += [{"config": name, "operator": event.key, "self_%": round(100 * event.self_cpu_time_total / total, 1), "calls": event.count // 2} for event in top]
    results["profile"] = rows
    return pd.DataFrame(rows)


AUTO_CHOICE = """
import json, sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
from stages.train.model import loss_only
from stages.train.plan import choose_settings
config, batch, steps = json.loads(sys.argv[1])
torch.manual_seed(0)
best, _ = choose_settings(loss_only(GPT2LMHeadModel(GPT2Config(**config))), {"precision": "auto", "compile": "auto"}, batch, 1, config["n_positions"], steps)
print(json.dumps([best["precision"], best["compile"]]))
"""


def auto_choice(config, batch, steps):
    """What the train stage's `auto` picks for a run of `steps` steps of this shape on this machine,
    chosen in a fresh process as the stage does (compilation earlier in a process leaves worker
    processes behind that slow the timings after it)."""
    out = subprocess.run([sys.executable, "-c", AUTO_CHOICE, json.dumps([ours(config).to_dict(), batch, steps])], cwd=ROOT, capture_output=True, text=True, check=True)
    return tuple(json.loads(out.stdout.splitlines()[-1]))


def bench_train(results):
    """Every explicit setting of this project's recipe against the tutorial's, in steady state, and
    which one `auto` picks. A setting's run time = warm-up + planned steps at its steady speed:
    the default run's 4,600 steps; for the tutorial shape, its 30 epochs over the mirror at batch 8."""
    rows = []
    results["peak_gflops"] = {p: round(measured_peak(p) / 1e9, 1) for p in {"fp32", *precision_candidates("auto")}}
    for name, config, blocks, steps, batch, planned in bench_shapes():
        settings = [(p, c) for p in precision_candidates("auto") for c in (False, True)]
        runs = [train_run(config, blocks, steps, "tutorial", batch)] + [train_run(config, blocks, steps, "ours", batch, 1, p, c) for p, c in settings]
        auto = auto_choice(config, batch, planned)
        run_seconds = [run["warmup_s"] + planned * run["seconds_per_step"] for run in runs]
        best_ours = min(run_seconds[1:])
        for run, seconds in zip(runs, run_seconds):
            gap = max(abs(a - b) for a, b in zip(run["losses"], runs[0]["losses"]))
            rows.append({"config": name, "recipe": run["recipe"], "precision": run["precision"], "compile": run["compile"],
                         "tokens_per_sec": run["tokens_per_sec"], "mfu_%": run["mfu_%"], "speedup": round(run["tokens_per_sec"] / runs[0]["tokens_per_sec"], 2),
                         "warmup_s": run["warmup_s"], "planned_steps": planned, "run_s": round(seconds), "vs_best_%": round(100 * (seconds / best_ours - 1), 1),
                         "auto": "auto" if run["recipe"] == "ours" and (run["precision"], run["compile"]) == auto else "",
                         "loss_after": round(run["losses"][-1], 4), "max_loss_gap": round(gap, 4)})
    results["train"] = rows
    return pd.DataFrame(rows)


class StopAfter(TrainerCallback):
    """Ends training at the first step boundary after `seconds` of training wall time."""

    def __init__(self, seconds):
        self.seconds, self.deadline = seconds, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.deadline = time.perf_counter() + self.seconds

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = time.perf_counter() >= self.deadline


def unigram_bits_per_char(train_ids, val_ids, vocab_size, val_chars):
    """A token-frequency model of the train split (add-one smoothed), scored on validation."""
    log_p = np.log((np.bincount(train_ids, minlength=vocab_size) + 1) / (len(train_ids) + vocab_size))
    return bits_per_char(-log_p[val_ids].mean(), val_chars / len(val_ids))


def bench_quality(results):
    """Validation bits per character at equal training wall time: the committed default run against
    the tutorial's recipe (6x384 / 1024 / 30k, Trainer defaults, lr 5e-5, warmup 200, batch 8,
    fp32) trained here for as long as the train stage took, on the same train/validation split."""
    cost, evaluated = read_json(ROOT / "metrics/train_cost.json"), read_json(ROOT / "metrics/eval.json")
    meta = read_json(ROOT / "data/tokens/meta.json")
    seconds = cost["actual"]["seconds"]
    params = PARAMS["tokenize"]
    texts = corpus_texts()
    n_spans = sum(1 for text in texts for _ in tokenize.spans(text, params["span_chars"]))
    val = tokenize.choose_validation(n_spans, params["val_fraction"], params["seed"])
    split = {"train": [], "val": []}
    for name, text in tokenize.segments(texts, params["span_chars"], val):
        split[name].append(text)
    val_chars = sum(map(len, split["val"]))
    ids = {name: encode_with_eot(tutorial_tokenizer(), parts) for name, parts in split.items()}

    torch.manual_seed(0)
    model = GPT2LMHeadModel(TUTORIAL_CONFIG)
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, learning_rate=5e-5, warmup_steps=200,
                             num_train_epochs=30, report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(), seed=0,
                             disable_tqdm=True)
    started = time.perf_counter()
    state = Trainer(model=model, args=args, train_dataset=block_list(ids["train"], 1024), callbacks=[StopAfter(seconds)]).train()
    tutorial_seconds = time.perf_counter() - started
    tutorial_loss = validation_loss(model.eval(), block_list(ids["val"], 1024), 8)
    ours_ids = {name: np.fromfile(ROOT / f"data/tokens/{name}.bin", dtype=meta["dtype"]).astype(np.int64) for name in ("train", "val")}
    rows = [
        {"model": "this project's default run", "train_seconds": seconds, "steps": PARAMS["train"]["max_steps"],
         "tokens": cost["estimate"]["tokens"], "val_bits_per_char": evaluated["bits_per_char"]},
        {"model": "tutorial's recipe, same wall time", "train_seconds": round(tutorial_seconds, 1), "steps": state.global_step,
         "tokens": state.global_step * 8 * 1024, "val_bits_per_char": round(bits_per_char(tutorial_loss, val_chars / len(ids["val"])), 4)},
        {"model": "token frequencies, 4k vocabulary", "train_seconds": 0, "steps": 0, "tokens": len(ours_ids["train"]),
         "val_bits_per_char": round(unigram_bits_per_char(ours_ids["train"], ours_ids["val"], meta["vocab_size"], meta["val"]["chars"]), 4)},
        {"model": "token frequencies, 30k vocabulary", "train_seconds": 0, "steps": 0, "tokens": len(ids["train"]),
         "val_bits_per_char": round(unigram_bits_per_char(ids["train"], ids["val"], TUTORIAL_CONFIG.vocab_size, val_chars), 4)},
    ]
    results["quality"] = rows
    return pd.DataFrame(rows)


def prep_workdir(corpus, work):
    """A work directory with the corpus as the clean stage's table (one row group per file, so the
    stage streams one document at a time), as .txt files for the tutorial, and the default tokenizer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (work / "data/clean").mkdir(parents=True)
    shutil.copytree(corpus, work / "corpus")
    shutil.copytree(ROOT / "models/tokenizer", work / "models/tokenizer")
    with pq.ParquetWriter(work / "data/clean/docs.parquet", pa.schema([("id", pa.string()), ("text", pa.string())])) as writer:
        for f in sorted(corpus.rglob("*.txt")):
            writer.write_table(pa.table({"id": [f.name], "text": [f.read_text(encoding="utf-8")]}))
    (work / "params.yaml").write_text(yaml.safe_dump({"tokenize": {**PARAMS["tokenize"], "block_size": 1024}}))


def bench_prep(results):
    rows = []
    for corpus_name, corpus in [("Tolstoy", PROSE / "Tolstoy"), ("ruslit prose", PROSE)]:
        size = sum(f.stat().st_size for f in corpus.rglob("*.txt"))
        with tempfile.TemporaryDirectory() as tmp:
            prep_workdir(corpus, Path(tmp) / "w")
            for kind in ("tutorial", "ours"):
                done = subprocess.run([sys.executable, "-m", "bench.prep_worker", kind, str(Path(tmp) / "w")], cwd=ROOT,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True)
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append({"corpus": corpus_name, "MB": round(size / 1e6, 1), "approach": kind, "seconds": round(measured["seconds"], 1),
                             "peak_gib": round(measured["peak_gib"], 2)})
    results["prep"] = rows
    return pd.DataFrame(rows)


def timed(cmd, cwd):
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def bench_pipeline(results):
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".venv"), symlinks=True)
        params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
        noop = timed(["dvc", "repro"], repo)
        sample_alone = timed([sys.executable, "-m", "stages.sample"], repo)
        params["sample"]["temperature"] = round(params["sample"]["temperature"] + 0.1, 3)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
        sample_only = timed(["dvc", "repro"], repo)
    rows = [{"what": "dvc repro, nothing changed", "seconds": round(noop, 2), "x sample stage": round(noop / sample_alone, 2)},
            {"what": "dvc repro after a sample param change", "seconds": round(sample_only, 2), "x sample stage": round(sample_only / sample_alone, 2)},
            {"what": "sample stage alone", "seconds": round(sample_alone, 2), "x sample stage": 1.0}]
    results["pipeline"] = rows
    return pd.DataFrame(rows)


def bench_generate(results):
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models/model")
    model = AutoModelForCausalLM.from_pretrained(ROOT / "models/model").eval()
    inputs = tokenizer(PARAMS["sample"]["prompts"][0], return_tensors="pt")
    rows = []
    for cache in (True, False):
        with torch.inference_mode():
            started = time.perf_counter()
            out = model.generate(**inputs, max_new_tokens=200, min_new_tokens=200, do_sample=False, use_cache=cache, pad_token_id=tokenizer.pad_token_id)
            seconds = time.perf_counter() - started
        rows.append({"kv_cache": cache, "new_tokens": out.shape[1] - inputs["input_ids"].shape[1], "tokens_per_sec": round((out.shape[1] - inputs["input_ids"].shape[1]) / seconds, 1)})
    results["generate"] = rows
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="train,profile,quality,prep,pipeline,generate")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/performance.json")
    args = parser.parse_args()
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
               "cpu_model": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")}
    sections = {"train": bench_train, "profile": bench_profile, "quality": bench_quality, "prep": bench_prep, "pipeline": bench_pipeline, "generate": bench_generate}
    for name in args.only.split(","):
        table = sections[name](results)
        print(f"\n## {name}\n{table.to_string(index=False)}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
