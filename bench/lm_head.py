"""bench.performance's `loss` part: the LM head and its cross-entropy, this project's loss
(tolstoy/model/loss.py: chunked when eager, whole when compiled) against transformers' (whole fp32
logits), with the vocabulary padded to a multiple of 64 rows or not. Each run is a fresh
process, so that its peak memory is its own. The `head` part times the LM head and its loss alone."""

import dataclasses
import json
import subprocess
import sys

import pandas as pd
import torch
import torch.nn.functional as F

from bench.recipes import project_model, shapes
from bench.workspace import ROOT, python_env
from tolstoy.device import precision_candidates, timed
from tolstoy.model.build import VOCAB_MULTIPLE
from tolstoy.model.loss import ChunkedLMHeadLoss, vocabulary_logits

LOSS_RUN = """
import json, resource, sys
from pathlib import Path
from bench.recipes import Shape, train_run
fields, precision, compile_model, options = json.loads(sys.argv[1])
run = train_run(Shape(**{**fields, "tokens": Path(fields["tokens"])}), "ours", precision, compile_model, **options)
print(json.dumps({**run, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

VARIANTS = [  # (loss, vocabulary rows): today's first
    ("transformers", 1),
    ("transformers", 64),
    ("ours", 1),
    ("ours", 64),
]


def loss_run(shape, precision, compile_model, loss, multiple):
    fields = {**dataclasses.asdict(shape), "tokens": str(shape.tokens)}
    options = {"own_loss": loss == "ours", "vocab_multiple": multiple}
    out = subprocess.run(
        [sys.executable, "-c", LOSS_RUN, json.dumps([fields, precision, compile_model, options])],
        cwd=ROOT,
        env=python_env(),
        capture_output=True,
        text=True,
        check=True,
    )
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
                rows.append(
                    {
                        "config": shape.name,
                        "precision": precision,
                        "compile": compile_model,
                        "loss": loss,
                        "vocab_multiple": multiple,
                        "tokens_per_sec": run["tokens_per_sec"],
                        "x_transformers": round(run["tokens_per_sec"] / base["tokens_per_sec"], 3),
                        "peak_mib": round(run["peak_mib"]),
                        "warmup_s": run["warmup_s"],
                        "loss_after": round(run["losses"][-1], 4),
                        "max_loss_gap": round(max(abs(a - b) for a, b in zip(run["losses"], base["losses"])), 4),
                    }
                )
    results["loss"] = rows
    return pd.DataFrame(rows)


MATMULS, COMPILED = "the three bf16 matmuls alone", "this project's, compiled (whole, fused)"


def head_losses(tokens, targets):
    """name: the loss of the LM head over (hidden, weight), as the train stage and transformers compute
    it; the compiled one last (compilation leaves worker processes behind)."""

    def whole(hidden, weight):
        return F.cross_entropy(vocabulary_logits(hidden, weight, tokens), targets, reduction="sum")

    return {
        "this project's, eager (chunked)": lambda hidden, weight: ChunkedLMHeadLoss.apply(
            hidden, weight, targets, tokens, 1.0
        ),
        "transformers' (whole fp32 logits), eager": lambda hidden, weight: F.cross_entropy(
            (hidden @ weight.T).float(), targets, reduction="sum"
        ),
        COMPILED: torch.compile(whole),
    }


def bench_head(results):
    """The tutorial shape's LM head and cross-entropy alone, forward and backward from the last hidden
    states, bf16 autocast, the best of 5 after a warm-up: each loss, and its three matmuls alone (logits,
    the hidden states' and the weight's gradients: what any implementation computes); and a compiled
    training step of the shape, to bound its speed-up if its loss cost only those matmuls."""
    shape = shapes()[1]
    step_seconds = (
        shape.batch
        * shape.model_params["n_positions"]
        / loss_run(shape, "bf16", True, "ours", VOCAB_MULTIPLE)["tokens_per_sec"]
    )
    torch.manual_seed(0)
    model = project_model(shape.model_params, shape.tokens)  # its LM head: padded rows, model.tokenizer_tokens
    weight, tokens = model.get_output_embeddings().weight, model.tokenizer_tokens
    predicted = shape.batch * (shape.model_params["n_positions"] - 1)
    hidden, targets = (
        torch.randn(predicted, weight.shape[1], requires_grad=True),
        torch.randint(0, tokens, (predicted,)),
    )
    h, w, g = (
        hidden.detach().bfloat16(),
        weight.detach().bfloat16(),
        torch.randn(predicted, weight.shape[0], dtype=torch.bfloat16),
    )
    seconds = {MATMULS: sum(min(timed(step, 5)) for step in (lambda: h @ w.T, lambda: g @ w, lambda: g.T @ h))}
    for name, loss in head_losses(tokens, targets).items():

        def step():
            hidden.grad = weight.grad = None
            with torch.autocast("cpu", torch.bfloat16):
                loss(hidden, weight).backward()

        step()
        seconds[name] = min(timed(step, 5))
    beyond = {name: s - seconds[MATMULS] for name, s in seconds.items()}
    rows = [
        {
            "head and loss": name,
            "ms": round(1000 * s, 1),
            "beyond_matmuls_ms": round(1000 * beyond[name], 1),
            "step_ms": round(1000 * step_seconds),
            "step_bound_x": round(step_seconds / (step_seconds - beyond[name]), 3) if name == COMPILED else None,
        }
        for name, s in seconds.items()
    ]
    results["head"] = rows
    return pd.DataFrame(rows)
