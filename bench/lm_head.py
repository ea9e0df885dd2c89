"""bench.performance's `loss` part: the LM head and its cross-entropy, this project's loss
(stages/causal_lm.py: chunked when eager, whole when compiled) against transformers' (whole fp32
logits), with the vocabulary padded to a multiple of 64 rows or not. Each run is a fresh
process, so that its peak memory is its own."""
import dataclasses
import json
import subprocess
import sys

import pandas as pd

from bench.recipes import shapes
from stages.train.device import precision_candidates
from tools.workspace import ROOT, python_env

LOSS_RUN = """
import json, resource, sys
from pathlib import Path
from bench.recipes import Shape, train_run
fields, precision, compile_model, options = json.loads(sys.argv[1])
run = train_run(Shape(**{**fields, "tokens": Path(fields["tokens"])}), "ours", precision, compile_model, **options)
print(json.dumps({**run, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

VARIANTS = [  # (loss, vocabulary rows): today's first
    ("transformers", 1), ("transformers", 64), ("ours", 1), ("ours", 64),
]


def loss_run(shape, precision, compile_model, loss, multiple):
    fields = {**dataclasses.asdict(shape), "tokens": str(shape.tokens)}
    options = {"own_loss": loss == "ours", "vocab_multiple": multiple}
    out = subprocess.run([sys.executable, "-c", LOSS_RUN, json.dumps([fields, precision, compile_model, options])], cwd=ROOT,
                         env=python_env(), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def bench_loss(results):
    """Every variant in the half precision where this machine has one (else fp32), compiled and eager, on both shapes
    (the default vocabulary, 8,192, is a multiple of 64 already: padding changes nothing there),
    each run twice in fresh processes and the faster kept."""
    precision = precision_candidates("auto")[0]
    rows = []
    for shape in shapes():
        variants = VARIANTS if shape.name != "default" else VARIANTS[::2]
        for compile_model in (True, False):
            measured = {variant: [] for variant in variants}
            for order in (variants, variants[::-1]):  # two rounds, in turn, the faster of each kept: the machine drifts
                for variant in order:
                    measured[variant].append(loss_run(shape, precision, compile_model, *variant))
            runs = [(*variant, max(measured[variant], key=lambda run: run["tokens_per_sec"])) for variant in variants]
            base = runs[0][2]
            for loss, multiple, run in runs:
                rows.append({"config": shape.name, "precision": precision, "compile": compile_model, "loss": loss, "vocab_multiple": multiple,
                             "tokens_per_sec": run["tokens_per_sec"], "x_transformers": round(run["tokens_per_sec"] / base["tokens_per_sec"], 3),
                             "peak_mib": round(run["peak_mib"]), "warmup_s": run["warmup_s"], "loss_after": round(run["losses"][-1], 4),
                             "max_loss_gap": round(max(abs(a - b) for a, b in zip(run["losses"], base["losses"])), 4)})
    results["loss"] = rows
    return pd.DataFrame(rows)

