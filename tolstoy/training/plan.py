"""The resource plan of a training run: precision, micro-batches that fit in memory, FLOPs, time, disk.

What a run cost beside what its plan said: metrics/train_cost.json, and from it the figures runs
are compared by: metrics/train.json.
"""

import math
import os
import statistics
from dataclasses import dataclass

import psutil
import torch

from tolstoy import StageError
from tolstoy.console import peak_rss_bytes
from tolstoy.device import AUTOCAST_DTYPES, on_gpu, precision_candidates, timed, torch_device
from tolstoy.files import read_json, write_json
from tolstoy.training.distributed import broadcast_data, in_group

# torch.compile takes tens of seconds before the first step (and needs a C++ compiler on a CPU).
COMPILE_PROBE_AFTER_SECONDS = 120
COMPILE_MARGIN = 1.05


def flops_per_token(n_params, n_layer, n_embd, context):
    """Training FLOPs per token: 6N for the weight matmuls (forward + backward) plus 12·L·d·T for attention."""
    return 6 * n_params + 12 * n_layer * n_embd * context


def model_flops_per_token(model, block_size):
    """flops_per_token of a GPT-2 model over blocks of block_size: position embeddings do no matmul."""
    config = model.config
    n_params = sum(p.numel() for p in model.parameters()) - config.n_positions * config.hidden_size
    return flops_per_token(n_params, config.num_hidden_layers, config.hidden_size, block_size)


def predicted_peak_bytes(base_rss, n_params, config, micro_batch, block_size):
    """Peak memory of a training step, fitted to measured peak RSS of CPU fp32 runs (bench/README.md):
    per token and layer about 44.5 saved d-wide fp32 vectors, about 3 copies of the logits, 3.3 of
    every head's T x T attention (CPU SDPA keeps them for backward), plus 12 bytes/parameter for
    gradients and AdamW moments. bf16 and GPU flash attention need less: elsewhere an upper bound, by
    which a GPU's micro-batch is chosen before its step is probed."""
    layers, width, heads = config.num_hidden_layers, config.hidden_size, config.num_attention_heads
    tokens = micro_batch * block_size
    activations = (
        44.5 * tokens * layers * width
        + 3.04 * tokens * config.vocab_size
        + 3.26 * micro_batch * heads * block_size**2 * layers
    )
    return base_rss + 12 * n_params + 4 * activations + 57e6


def memory_budget(processes_here):
    """Bytes one training process may use: GPU memory, or this process's share of RAM."""
    if on_gpu():
        return torch.cuda.mem_get_info()[1]
    return (psutil.virtual_memory().available + current_rss() * processes_here) / processes_here


def plan_micro_batch(batch_size, predict, budget):
    """The largest micro-batch dividing batch_size whose predicted peak fits 90% of the budget."""
    for micro in sorted((m for m in range(1, batch_size + 1) if batch_size % m == 0), reverse=True):
        if predict(micro) <= 0.9 * budget:
            return micro
    raise StageError(
        f"training needs about {predict(1) / 2**30:.1f} GiB even one block at a time, "
        f"and {budget / 2**30:.1f} GiB is available: "
        "use a smaller model (model.n_layer, model.n_embd), tokenize.block_size or tokenizer.vocab_size"
    )


def probe_micro_batch(
    model, micro_batch, block_size, precision, compile_model, warmup=2, min_repeats=3, min_seconds=1.0
):
    """(median seconds of a forward+backward of a micro-batch of random tokens after warm-up passes,
    seconds the warm-up passes took beyond that: compilation, allocator and kernel set-up, the peak
    GPU memory the passes allocated: weights, gradients and activations; None on a CPU).
    Short passes are repeated until they add up to `min_seconds`, so that noise averages out."""
    model.to(torch_device())
    model.train()  # dropout on, as Trainer trains it (a base is loaded in eval mode)
    if on_gpu():
        torch.cuda.reset_peak_memory_stats()
    module = torch.compile(model) if compile_model else model
    ids = torch.randint(0, model.config.vocab_size, (micro_batch, block_size), device=torch_device())
    dtype = AUTOCAST_DTYPES.get(precision)

    def step():
        with torch.autocast(torch_device(), dtype=dtype or torch.float32, enabled=dtype is not None):
            module(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    warm, steady = timed(step, warmup), timed(step, min_repeats)
    while sum(steady) < min_seconds and len(steady) < 20:
        steady += timed(step, 1)
    median = statistics.median(steady)
    return median, max(0.0, sum(warm) - warmup * median), torch.cuda.max_memory_allocated() if on_gpu() else None


def choose_settings(model, precision_setting, compile_setting, micro_batch, grad_accum, block_size, steps, kept=None):
    """(precision and compile for this run with the figures they were chosen by, how they were chosen).

    Explicit params are obeyed. For `auto` the candidates are timed on this machine and the one
    with the shortest expected run wins: warm-up (compilation) plus the steps at steady-state speed;
    a compiled one must be COMPILE_MARGIN shorter (a short probe cannot see recompilation mid-run).
    Compiled steps are timed only when the eager run is planned to last over COMPILE_PROBE_AFTER_SECONDS
    (a shorter run cannot win back a compilation). A run resumed from its checkpoints keeps the
    choice `kept` it made (timed eager). Every process of a distributed run takes rank 0's choice."""

    def measure(precision, compile_model):
        seconds, warmup, peak = probe_micro_batch(model, micro_batch, block_size, precision, compile_model)
        return {
            "precision": precision,
            "compile": compile_model,
            "seconds_per_step": float(f"{grad_accum * seconds:.6g}"),
            "warmup_seconds": round(warmup, 1),
            "expected_seconds": round(warmup + steps * grad_accum * seconds, 1),
            **({"peak_gib": round(peak / 2**30, 3)} if peak is not None else {}),
        }

    if kept:
        best, choice = [{**measure(kept["precision"], False), "compile": kept["compile"]}], {"chosen_by": "checkpoints"}
    else:
        measured = []
        for precision in precision_candidates(precision_setting):
            if compile_setting is not True:
                measured.append(measure(precision, False))
            if compile_setting is True or (
                compile_setting == "auto" and measured[-1]["expected_seconds"] > COMPILE_PROBE_AFTER_SECONDS
            ):
                measured.append(measure(precision, True))
        margin = lambda c: COMPILE_MARGIN if c["compile"] and compile_setting == "auto" else 1  # noqa: E731
        best = [min(measured, key=lambda candidate: candidate["expected_seconds"] * margin(candidate))]
        explicit = "auto" not in (precision_setting, compile_setting)
        by_name = {
            settings_name(c): {k: v for k, v in c.items() if k not in ("precision", "compile")} for c in measured
        }  # tabulated by `dvc exp show`
        choice = {"chosen_by": "params" if explicit else "measurement", "measured": by_name}
    if in_group():  # on every path: a worker may lack rank 0's checkpoints
        best = broadcast_data(best)
    return best[0], choice


def settings_name(candidate):
    return candidate["precision"] + ("+compile" if candidate["compile"] else "")


@dataclass
class Plan:
    """Per-step figures of a run; `estimate(steps)` scales them to the steps still to run."""

    n_params: int
    micro_batch: int
    grad_accum: int
    tokens_per_step: int
    flops_per_token: float
    seconds_per_step: float
    warmup_seconds: float
    peak_bytes: float
    precision: str
    compile: bool
    choice: dict

    def estimate(self, steps):
        return {
            "params": self.n_params,
            "tokens": steps * self.tokens_per_step,
            "flops": steps * self.tokens_per_step * self.flops_per_token,
            "seconds": round(self.warmup_seconds + steps * self.seconds_per_step, 1),
            "peak_gib": round(self.peak_bytes / 2**30, 3),
            "checkpoint_mib": round(12 * self.n_params / 2**20, 1),  # fp32 weights and two AdamW moments
            "micro_batch": self.micro_batch,
            "grad_accum": self.grad_accum,
            "precision": self.precision,
            "compile": self.compile,
            **self.choice,
        }


def total_steps(train_params, n_blocks, world_size):
    """Optimizer steps of the whole run: max_steps, or epochs over the blocks at the global batch."""
    if train_params.max_steps:
        return train_params.max_steps
    global_batch = train_params.batch_size * train_params.grad_accum * world_size
    return max(1, math.ceil(train_params.epochs * (n_blocks // global_batch)))


def make_plan(model, train_params, block_size, steps, kept=None):
    """Micro-batches that fit in memory, FLOPs and time per step, precision and compile, peak memory."""
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    per_token = model_flops_per_token(model, block_size)
    base_rss = current_rss()
    predict = lambda micro: predicted_peak_bytes(base_rss, n_params, config, micro, block_size)  # noqa: E731
    processes_here = 1 if on_gpu() else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    batch_size = train_params.batch_size
    micro = plan_micro_batch(batch_size, predict, memory_budget(processes_here))
    grad_accum = train_params.grad_accum * batch_size // micro
    tokens_per_step = micro * grad_accum * block_size * int(os.environ.get("WORLD_SIZE", "1"))
    best, choice = choose_settings(
        model, train_params.precision, train_params.compile, micro, grad_accum, block_size, steps, kept
    )
    # On a GPU the probe measured the step's memory; training adds AdamW's two fp32 moments per parameter.
    peak = best["peak_gib"] * 2**30 + 8 * n_params if "peak_gib" in best else predict(micro)
    return Plan(
        n_params,
        micro,
        grad_accum,
        tokens_per_step,
        per_token,
        best["seconds_per_step"],
        best["warmup_seconds"],
        peak,
        best["precision"],
        best["compile"],
        choice,
    )


def current_rss():
    return psutil.Process().memory_info().rss


def reset_gpu_peak_memory():
    """From here on the GPU's peak memory is the training's alone, not the probes' (their cached blocks
    are given back too). On a CPU the peak stays the whole process's RSS, which predicted_peak_bytes fits."""
    if on_gpu():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def record_cost(path, estimate, seconds, tokens, outcome, checkpoint):
    """Write the plan beside what the run took (time, tokens/s, peak memory: the GPU memory training
    allocated, or RSS of this process; checkpoint size) and its outcome (steps, why it stopped, the
    step kept and its validation loss)."""
    actual = {
        "seconds": round(seconds, 1),
        "tokens_per_sec": round(tokens / seconds, 1),
        "peak_gib": round((torch.cuda.max_memory_allocated() if on_gpu() else peak_rss_bytes()) / 2**30, 3),
        "checkpoint_mib": round(sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) / 2**20, 1)
        if checkpoint
        else None,
    }
    write_json(path, {"estimate": estimate, "actual": actual, "outcome": outcome})


def write_train_metrics(cost_path, metrics_path):
    """The run's time, speed, the step kept and what stopped training (`max_steps` or `patience`; the
    cost record has the full sentence), named and sized for a column of `dvc exp show`."""
    cost = read_json(cost_path)
    write_json(
        metrics_path,
        {
            "train_seconds": cost["actual"]["seconds"],
            "train_tokens_per_sec": cost["actual"]["tokens_per_sec"],
            "kept_step": cost["outcome"]["kept_step"],
            "stopped_by": cost["outcome"]["stopped_by"],
        },
    )
