"""Performance benchmark: this project's training settings against the tutorial's recipe, data
preparation against the tutorial's datasets.map + group_texts, pipeline overhead, generation.

    python -m bench.performance [--only train,prep,pipeline,generate] [--json bench/results/performance.json]

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

from stages.common import Blocks, flops_per_token, iter_documents, peak_flops, peak_rss_bytes
from stages.tokenizer import train_bpe
from stages.train import resolve_compile, resolve_precision

ROOT = Path(__file__).resolve().parent.parent
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
PROSE = ROOT.parent / "shared/corpus/ruslit/prose"


class StepTimer(TrainerCallback):
    """Per-step losses, and wall time from the end of the first (warm-up, compile) step to the last."""

    def __init__(self):
        self.losses, self.started, self.finished = [], None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.started = time.perf_counter()
        self.finished = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self.losses.append(logs["loss"])


@functools.lru_cache
def measured_peak(precision):
    """Measured once, before anything compiles: torch.compile leaves busy worker processes behind."""
    return peak_flops(precision)


def train_run(config, blocks, steps, recipe):
    """tokens/s, MFU and per-step losses of `steps` optimizer steps of batch 8 with one recipe."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, learning_rate=5e-5, warmup_steps=200, max_steps=steps,
                  logging_steps=1, report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(), seed=0, disable_tqdm=True)
    precision = "fp32"
    if recipe == "tutorial":  # the tutorial's Trainer: library defaults, fp32
        args = TrainingArguments(**common)
    else:  # this project's train stage settings
        precision = resolve_precision(PARAMS["train"]["precision"])
        compiled = recipe == "ours+compile" or resolve_compile(PARAMS["train"]["compile"])
        args = TrainingArguments(**common, optim="adamw_torch_fused", bf16=precision == "bf16", fp16=precision == "fp16", torch_compile=compiled)
    timer = StepTimer()
    Trainer(model=model, args=args, train_dataset=blocks, callbacks=[timer]).train()
    tokens_per_sec = (steps - 1) * 8 * config.n_positions / (timer.finished - timer.started)
    n_params = sum(p.numel() for p in model.parameters()) - config.n_positions * config.n_embd
    mfu = tokens_per_sec * flops_per_token(n_params, config.n_layer, config.n_embd, config.n_positions) / measured_peak(precision)
    return {"recipe": recipe, "precision": precision, "tokens_per_sec": round(tokens_per_sec, 1), "mfu_%": round(100 * mfu, 1), "losses": timer.losses}


def block_list(ids, block_size):
    n = len(ids) // block_size
    return [{"input_ids": ids[i * block_size:(i + 1) * block_size].astype(np.int64), "labels": ids[i * block_size:(i + 1) * block_size].astype(np.int64)} for i in range(n)]


def bench_train(results):
    rows = []
    results["peak_gflops"] = {p: round(measured_peak(p) / 1e9, 1) for p in {"fp32", resolve_precision(PARAMS["train"]["precision"])}}
    model_params = PARAMS["model"]
    block = PARAMS["tokenize"]["block_size"]
    default = GPT2Config(vocab_size=PARAMS["tokenizer"]["vocab_size"], n_positions=block, n_embd=model_params["n_embd"],
                         n_layer=model_params["n_layer"], n_head=model_params["n_head"])
    default_blocks = Blocks(ROOT / "data/tokens", "train", limit=512)
    # The tutorial's configuration: 6 x 384, block 1024, 30k vocabulary trained on the same documents.
    texts = [doc["text"] for doc in iter_documents(ROOT / "data/clean/docs.parquet", ["text"])]
    tokenizer = train_bpe(iter(texts), vocab_size=30000, min_frequency=2)
    ids = np.array([i for text in texts[:2] for i in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]], dtype=np.int32)
    tutorial = GPT2Config(vocab_size=30000, n_positions=1024, n_embd=384, n_layer=6, n_head=6)
    for name, config, blocks, steps in [("default", default, default_blocks, 16), ("6x384/1024/30k", tutorial, block_list(ids, 1024), 4)]:
        runs = [train_run(config, blocks, steps, recipe) for recipe in ("tutorial", "ours", "ours+compile")]
        for run in runs:
            gap = max(abs(a - b) for a, b in zip(run["losses"], runs[0]["losses"]))
            rows.append({"config": name, "recipe": run["recipe"], "precision": run["precision"], "tokens_per_sec": run["tokens_per_sec"],
                         "mfu_%": run["mfu_%"], "speedup": round(run["tokens_per_sec"] / runs[0]["tokens_per_sec"], 2),
                         "loss_after": round(run["losses"][-1], 4), "max_loss_gap": round(gap, 4)})
    results["train"] = rows
    return pd.DataFrame(rows)


def prep_worker(kind, corpus, tokenizer_dir, out):
    """Runs in its own process so that its peak RSS is its own; prints seconds and peak GiB."""
    started = time.perf_counter()
    if kind == "ours":
        work = Path(out)
        (work / "data/clean").mkdir(parents=True)
        shutil.copytree(tokenizer_dir, work / "models/tokenizer")
        files = sorted(Path(corpus).rglob("*.txt"))
        # one row group per file, so the stage streams one document at a time
        import pyarrow as pa
        import pyarrow.parquet as pq

        with pq.ParquetWriter(work / "data/clean/docs.parquet", pa.schema([("id", pa.string()), ("text", pa.string())])) as writer:
            for f in files:
                writer.write_table(pa.table({"id": [f.name], "text": [f.read_text(encoding="utf-8")]}))
        (work / "params.yaml").write_text(yaml.safe_dump({"tokenize": {**PARAMS["tokenize"], "block_size": 1024}}))
        os.chdir(work)
        started = time.perf_counter()
        from stages import tokenize

        tokenize.main()
    else:  # the tutorial: datasets text loader, batched map to token ids, group_texts into 1024-token blocks
        from datasets import load_dataset

        os.environ["HF_DATASETS_CACHE"] = out
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        dataset = load_dataset("text", data_files=[str(f) for f in sorted(Path(corpus).rglob("*.txt"))], cache_dir=out)["train"]
        dataset = dataset.map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"])

        def group_texts(examples):
            concatenated = {k: sum(examples[k], []) for k in examples}
            total = len(concatenated["input_ids"]) // 1024 * 1024
            result = {k: [t[i:i + 1024] for i in range(0, total, 1024)] for k, t in concatenated.items()}
            result["labels"] = result["input_ids"].copy()
            return result

        dataset.map(group_texts, batched=True)
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_gib": peak_rss_bytes() / 2**30}))


def bench_prep(results):
    rows = []
    for corpus_name, corpus in [("Tolstoy 16 MB", PROSE / "Tolstoy"), ("ruslit prose 47-64 MB", PROSE)]:
        size = sum(f.stat().st_size for f in corpus.rglob("*.txt"))
        for kind in ("tutorial", "ours"):
            with tempfile.TemporaryDirectory() as out:
                done = subprocess.run([sys.executable, "-m", "bench.performance", "--prep-worker", kind, str(corpus), str(ROOT / "models/tokenizer"), str(Path(out) / "w")],
                                      cwd=ROOT, capture_output=True, text=True, check=True)
                measured = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"corpus": corpus_name, "MB": round(size / 1e6, 1), "approach": kind, "seconds": round(measured["seconds"], 1), "peak_gib": round(measured["peak_gib"], 2)})
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
    parser.add_argument("--only", default="train,prep,pipeline,generate")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/performance.json")
    parser.add_argument("--prep-worker", nargs=4, metavar=("KIND", "CORPUS", "TOKENIZER", "OUT"))
    args = parser.parse_args()
    if args.prep_worker:
        return prep_worker(*args.prep_worker)
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
               "cpu_model": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")}
    sections = {"train": bench_train, "prep": bench_prep, "pipeline": bench_pipeline, "generate": bench_generate}
    for name in args.only.split(","):
        table = sections[name](results)
        print(f"\n## {name}\n{table.to_string(index=False)}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
