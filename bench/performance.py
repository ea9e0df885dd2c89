"""Performance benchmark: this project's training settings against the tutorial's recipe (speed,
and bits per character at equal wall time), where a step's time goes, data preparation against the tutorial's
datasets.map + group_texts, pipeline overhead, generation.

    python -m bench.performance [--only train,loss,head,loader,profile,quality,prep,pipeline,generate]
        [--json bench/results/performance.json]

Needs a finished default `dvc repro` in this checkout (data/, models/) and, for data preparation,
../shared/corpus/ruslit/prose. Every comparison is measured in the same run, on this machine.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import Trainer, TrainerCallback

from bench.around_training import bench_generate, bench_pipeline, bench_prep
from bench.lm_head import bench_head, bench_loss
from bench.loader import bench_loader
from bench.recipes import PARAMS, measured_peak, shapes, train_run, tutorial_arguments, tutorial_model, tutorial_tokens
from bench.workspace import ROOT, python_env
from tolstoy.config.params import ModelParams
from tolstoy.data.blocks import Blocks, bits_per_char
from tolstoy.device import precision_candidates
from tolstoy.evaluation.scores import validation_loss
from tolstoy.files import read_json
from tolstoy.model.build import scratch_model


def bench_profile(results):
    """Where an eager forward+backward of this project's model goes, by operator self time (torch.profiler,
    fp32, two steps after one warm-up)."""
    rows = []
    for shape in shapes():
        torch.manual_seed(0)
        meta = Blocks(shape.tokens, "train").meta
        model = scratch_model(
            ModelParams(**shape.model_params),
            meta["vocab_size"],
            meta["eot_id"],
            meta["eot_id"],
            PARAMS["train"]["attn_implementation"],
        )
        blocks = Blocks(shape.tokens, "train", limit=shape.batch)
        ids = torch.as_tensor(np.stack([blocks[i]["input_ids"] for i in range(shape.batch)]))
        step = lambda: model(input_ids=ids, labels=ids).loss.backward()  # noqa: E731
        step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            step()
            step()
        events = profile.key_averages()
        total = sum(event.self_cpu_time_total for event in events)
        top = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[:8]
        rows += [
            {
                "config": shape.name,
                "operator": event.key,
                "self_%": round(100 * event.self_cpu_time_total / total, 1),
                "calls": event.count // 2,
            }
            for event in top
        ]
    results["profile"] = rows
    return pd.DataFrame(rows)


AUTO_CHOICE = """
import json, sys, torch
from bench.recipes import project_model
from tolstoy.training.plan import choose_settings
model_params, tokens, block_size, batch, steps = json.loads(sys.argv[1])
torch.manual_seed(0)
best, _ = choose_settings(project_model(model_params, tokens), "auto", "auto", batch, 1, block_size, steps)
print(json.dumps([best["precision"], best["compile"]]))
"""


def auto_choice(shape):
    """What the train stage's `auto` picks for a run of the shape's planned steps on this machine,
    chosen in a fresh process as the stage does (compilation earlier in a process leaves worker
    processes behind that slow the timings after it)."""
    arguments = [
        shape.model_params,
        str(shape.tokens),
        Blocks(shape.tokens, "train").block_size,
        shape.batch,
        shape.planned_steps,
    ]
    out = subprocess.run(
        [sys.executable, "-c", AUTO_CHOICE, json.dumps(arguments)],
        cwd=ROOT,
        env=python_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return tuple(json.loads(out.stdout.splitlines()[-1]))


def bench_train(results):
    """Every explicit setting of this project's recipe against the tutorial's, in steady state, and
    which one `auto` picks. A setting's run time = warm-up + planned steps at its steady speed:
    the default run's max_steps; for the tutorial shape, its 30 epochs over the mirror at batch 8."""
    rows = []
    results["peak_gflops"] = {p: round(measured_peak(p) / 1e9, 1) for p in {"fp32", *precision_candidates("auto")}}
    for shape in shapes():
        settings = [(p, c) for p in precision_candidates("auto") for c in (False, True)]
        runs = [train_run(shape, "tutorial")] + [train_run(shape, "ours", p, c) for p, c in settings]
        auto = auto_choice(shape)
        run_seconds = [run["warmup_s"] + shape.planned_steps * run["seconds_per_step"] for run in runs]
        best_ours = min(run_seconds[1:])
        for run, seconds in zip(runs, run_seconds):
            gap = max(abs(a - b) for a, b in zip(run["losses"], runs[0]["losses"]))
            rows.append(
                {
                    "config": shape.name,
                    "recipe": run["recipe"],
                    "precision": run["precision"],
                    "compile": run["compile"],
                    "tokens_per_sec": run["tokens_per_sec"],
                    "mfu_%": run["mfu_%"],
                    "peak_gflops": run["peak_gflops"],
                    "mfu_check": run["mfu_check"],
                    "speedup": round(run["tokens_per_sec"] / runs[0]["tokens_per_sec"], 2),
                    "warmup_s": run["warmup_s"],
                    "planned_steps": shape.planned_steps,
                    "run_s": round(seconds),
                    "vs_best_%": round(100 * (seconds / best_ours - 1), 1),
                    "auto": "auto" if run["recipe"] == "ours" and (run["precision"], run["compile"]) == auto else "",
                    "loss_after": round(run["losses"][-1], 4),
                    "max_loss_gap": round(gap, 4),
                }
            )
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


def unigram_bits_per_char(tokens):
    """A token-frequency model of the train split (add-one smoothed), scored on validation."""
    train, val = Blocks(tokens, "train"), Blocks(tokens, "val")
    vocab_size = train.meta["vocab_size"]
    log_p = np.log((np.bincount(train.tokens, minlength=vocab_size) + 1) / (len(train.tokens) + vocab_size))
    return bits_per_char(-log_p[val.tokens].mean(), val.chars_per_token)


def bench_quality(results):
    """Validation bits per character at equal training wall time: the committed default run against
    the tutorial's recipe (6x384 / 1024 / 30k, Trainer defaults, lr 5e-5, warmup 200, batch 8,
    fp32) trained here for as long as the train stage took, on the same train/validation split."""
    cost, evaluated = read_json(ROOT / "metrics/train_cost.json"), read_json(ROOT / "metrics/eval.json")
    seconds = cost["actual"]["seconds"]
    tokens, (_, tutorial) = tutorial_tokens(), shapes()
    train, val = Blocks(tokens, "train"), Blocks(tokens, "val")
    torch.manual_seed(0)
    model = tutorial_model(tutorial.model_params, tokens)
    started = time.perf_counter()
    state = Trainer(
        model=model,
        args=tutorial_arguments(per_device_train_batch_size=8, num_train_epochs=30),
        train_dataset=train,
        callbacks=[StopAfter(seconds)],
    ).train()
    tutorial_seconds = time.perf_counter() - started
    tutorial_loss = validation_loss(model.eval(), val, 8)
    rows = [
        {
            "model": "this project's default run",
            "train_seconds": seconds,
            "steps": PARAMS["train"]["max_steps"],
            "tokens": cost["estimate"]["tokens"],
            "val_bits_per_char": evaluated["bits_per_char"],
        },
        {
            "model": "tutorial's recipe, same wall time",
            "train_seconds": round(tutorial_seconds, 1),
            "steps": state.global_step,
            "tokens": state.global_step * 8 * train.block_size,
            "val_bits_per_char": round(bits_per_char(tutorial_loss, val.chars_per_token), 4),
        },
    ]
    for directory in (ROOT / "data/tokens", tokens):
        rows.append(
            {
                "model": f"token frequencies, vocabulary {Blocks(directory, 'train').meta['vocab_size']:,}",
                "train_seconds": 0,
                "steps": 0,
                "tokens": len(Blocks(directory, "train").tokens),
                "val_bits_per_char": round(unigram_bits_per_char(directory), 4),
            }
        )
    results["quality"] = rows
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="train,loss,loader,profile,quality,prep,pipeline,generate")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/performance.json")
    args = parser.parse_args()
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "cpu_model": next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), ""
        ),
    }
    sections = {
        "train": bench_train,
        "loss": bench_loss,
        "head": bench_head,
        "loader": bench_loader,
        "profile": bench_profile,
        "quality": bench_quality,
        "prep": bench_prep,
        "pipeline": bench_pipeline,
        "generate": bench_generate,
    }
    for name in args.only.split(","):
        table = sections[name](results)
        print(f"\n## {name}\n{table.to_string(index=False)}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
