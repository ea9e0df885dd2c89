"""The resource plan of a training run: precision, micro-batches that fit in memory, FLOPs, time, disk."""
import math
import os
import statistics
import time
from dataclasses import dataclass

import psutil
import torch
from accelerate.utils import parse_flag_from_env

from stages.common import StageError, peak_rss_bytes, write_json

# Dense bf16/fp16 tensor-core peaks from the vendors' datasheets, TFLOP/s per GPU (fp32: plain, no TF32).
GPU_PEAK_TFLOPS = {
    "H200": {"bf16": 989, "fp16": 989, "fp32": 67},
    "H100": {"bf16": 989, "fp16": 989, "fp32": 67},
    "A100": {"bf16": 312, "fp16": 312, "fp32": 19.5},
    "L40S": {"bf16": 362, "fp16": 362, "fp32": 91.6},
    "A10G": {"bf16": 70, "fp16": 70, "fp32": 31.2},
    "L4": {"bf16": 121, "fp16": 121, "fp32": 30.3},
    "RTX 4090": {"bf16": 165, "fp16": 165, "fp32": 82.6},
    "V100": {"fp16": 125, "fp32": 15.7},
    "T4": {"fp16": 65, "fp32": 8.1},
}
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# torch.compile costs tens of seconds before the first step on CPU (and needs a C++ compiler there):
# `auto` compiles on CPU only when the run is planned to last this long (gains: bench/README.md).
CPU_COMPILE_AFTER_SECONDS = 1800


def on_gpu():
    """Whether this process trains on the GPU: there is one and the accelerate config does not say use_cpu."""
    return torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_CPU")


def device():
    return "cuda" if on_gpu() else "cpu"


def timed(step, repeats):
    """Seconds of each of `repeats` calls of step(), the GPU's queue drained after each."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        if on_gpu():
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds


def peak_flops(precision):
    """Peak FLOP/s of this device for `precision`: the datasheet for a known GPU, otherwise a
    matmul probe measured on the spot (what torch reaches here, not a nominal figure)."""
    if on_gpu():
        name = torch.cuda.get_device_name()
        for model, peaks in GPU_PEAK_TFLOPS.items():
            if model in name and precision in peaks:
                return peaks[precision] * 1e12
    n = 8192 if on_gpu() else 1024
    a, b = (torch.randn(n, n, device=device(), dtype=AUTOCAST_DTYPES.get(precision, torch.float32)) for _ in range(2))
    seconds = []
    while len(seconds) < 10 and sum(seconds) < 1.0:  # bounded: bf16 emulated on a CPU without it is very slow
        seconds += timed(lambda: a @ b, repeats=1)
    return 2 * n**3 / min(seconds)


def flops_per_token(n_params, n_layer, n_embd, context):
    """Training FLOPs per token: 6N for the weight matmuls (forward + backward) plus 12·L·d·T for attention."""
    return 6 * n_params + 12 * n_layer * n_embd * context


def current_rss():
    return psutil.Process().memory_info().rss


def resolve_precision(precision):
    if precision != "auto":
        return precision
    if on_gpu():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # Without native bf16 instructions CPU autocast emulates bf16 and runs slower than fp32.
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def resolve_compile(compile_setting, estimated_seconds):
    if compile_setting != "auto":
        return bool(compile_setting)
    # On a GPU compilation pays for itself within a few hundred steps.
    return on_gpu() or estimated_seconds > CPU_COMPILE_AFTER_SECONDS


def predicted_peak_bytes(base_rss, n_params, config, micro_batch, block_size):
    """Peak memory of a training step, fitted to measured peak RSS of CPU fp32 runs (bench/README.md):
    per token and layer about 44.5 saved d-wide fp32 vectors, about 3 copies of the logits, 3.3 of
    every head's T x T attention (CPU SDPA keeps them for backward), plus 12 bytes/parameter for
    gradients and AdamW moments. bf16 and GPU flash attention need less: elsewhere an upper bound."""
    layers, width, heads = config.num_hidden_layers, config.hidden_size, config.num_attention_heads
    tokens = micro_batch * block_size
    activations = 44.5 * tokens * layers * width + 3.04 * tokens * config.vocab_size + 3.26 * micro_batch * heads * block_size**2 * layers
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
        f"training needs about {predict(1) / 2**30:.1f} GiB even one block at a time, and {budget / 2**30:.1f} GiB is available: "
        "use a smaller model (model.n_layer, model.n_embd), tokenize.block_size or tokenizer.vocab_size"
    )


def probe_seconds_per_micro_batch(model, micro_batch, block_size, precision, warmup=2, repeats=3):
    """Median time of a forward+backward of a micro-batch of random tokens, after warm-up passes
    (the first passes run slower while allocator and kernels settle)."""
    model.to(device())
    ids = torch.randint(0, model.config.vocab_size, (micro_batch, block_size), device=device())
    dtype = AUTOCAST_DTYPES.get(precision)

    def step():
        with torch.autocast(device(), dtype=dtype or torch.float32, enabled=dtype is not None):
            model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    return statistics.median(timed(step, warmup + repeats)[warmup:])


@dataclass
class Plan:
    """Per-step figures of a run; `estimate(steps)` scales them to the steps still to run."""

    n_params: int
    micro_batch: int
    grad_accum: int
    tokens_per_step: int
    flops_per_token: float
    seconds_per_step: float
    peak_bytes: float
    compile: bool

    def estimate(self, steps):
        return {
            "params": self.n_params,
            "tokens": steps * self.tokens_per_step,
            "flops": steps * self.tokens_per_step * self.flops_per_token,
            "seconds": round(steps * self.seconds_per_step, 1),
            "peak_gib": round(self.peak_bytes / 2**30, 3),
            "checkpoint_mib": round(12 * self.n_params / 2**20, 1),  # fp32 weights and two AdamW moments
            "micro_batch": self.micro_batch,
            "grad_accum": self.grad_accum,
        }


def total_steps(train_params, n_blocks, world_size):
    """Optimizer steps of the whole run: max_steps, or epochs over the blocks at the global batch."""
    if train_params["max_steps"]:
        return train_params["max_steps"]
    global_batch = train_params["batch_size"] * train_params["grad_accum"] * world_size
    return max(1, math.ceil(train_params["epochs"] * (n_blocks // global_batch)))


def make_plan(model, train_params, block_size, steps, precision):
    """Micro-batches that fit in memory, FLOPs and time per step, and whether to compile."""
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    per_token = flops_per_token(n_params - config.n_positions * config.hidden_size, config.num_hidden_layers, config.hidden_size, block_size)
    base_rss = current_rss()
    predict = lambda micro: predicted_peak_bytes(base_rss, n_params, config, micro, block_size)  # noqa: E731
    processes_here = 1 if on_gpu() else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    batch_size = train_params["batch_size"]
    micro = plan_micro_batch(batch_size, predict, memory_budget(processes_here))
    grad_accum = train_params["grad_accum"] * batch_size // micro
    tokens_per_step = micro * grad_accum * block_size * int(os.environ.get("WORLD_SIZE", "1"))
    seconds_per_step = grad_accum * probe_seconds_per_micro_batch(model, micro, block_size, precision)
    compile_model = resolve_compile(train_params["compile"], steps * seconds_per_step)
    return Plan(n_params, micro, grad_accum, tokens_per_step, per_token, seconds_per_step, predict(micro), compile_model)


def record_cost(path, estimate, seconds, checkpoint):
    """Write the plan beside what the run took: time, peak memory (the GPU's, or RSS of this process), checkpoint size."""
    actual = {
        "seconds": round(seconds, 1),
        "peak_gib": round((torch.cuda.max_memory_reserved() if on_gpu() else peak_rss_bytes()) / 2**30, 3),
        "checkpoint_mib": round(sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) / 2**20, 1) if checkpoint else None,
    }
    write_json(path, {"estimate": estimate, "actual": actual})
