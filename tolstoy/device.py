"""The device a training process runs on, and what it can do: GPU or CPU (the accelerate config's
use_cpu), its peak FLOP/s, the precisions worth timing."""

import time

import torch
from accelerate.utils import parse_flag_from_env

from tolstoy.config.accelerate import config_uses_cpu

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


def on_gpu():
    """Whether this process trains on the GPU: there is one and the accelerate config does not say use_cpu."""
    return torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_CPU")


def inference_device(config_path):
    """Where evaluate and sample run: the GPU when there is one and neither the accelerate config
    nor ACCELERATE_USE_CPU says use_cpu."""
    return "cuda" if on_gpu() and not config_uses_cpu(config_path) else "cpu"


def torch_device():
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


def peak_flops(precision, seconds=1.5):
    """Peak FLOP/s of this device for `precision`: the datasheet for a known GPU, otherwise the best
    of matmul probes of several sizes, each repeated (what torch reaches here, not a nominal figure).
    One size once is not enough on a shared CPU: a neighbour's burst or a size the library tiles
    badly reads as a low peak, and MFU as over 100%. Bounded by `seconds`: a size whose one product
    would outlast what is left is not probed (emulated bf16 is slow), and the smallest is timed
    three times at least, so that one call's set-up is never the figure."""
    if on_gpu():
        name = torch.cuda.get_device_name()
        for model, peaks in GPU_PEAK_TFLOPS.items():
            if model in name and precision in peaks:
                return peaks[precision] * 1e12
    sizes = (4096, 8192) if on_gpu() else (512, 1024, 2048)
    dtype = AUTOCAST_DTYPES.get(precision, torch.float32)
    best, spent = 0.0, 0.0
    for n in sizes:
        if best and 2 * n**3 / best > seconds - spent:  # one product of this size would outlast the budget
            break
        a, b = (torch.randn(n, n, device=torch_device(), dtype=dtype) for _ in range(2))
        times = timed(lambda: a @ b, repeats=1 if best else 3)  # the first call also pays the library's set-up
        while len(times) < 20 and sum(times) < seconds / len(sizes):
            times += timed(lambda: a @ b, repeats=1)
        best, spent = max(best, 2 * n**3 / min(times)), spent + sum(times)
    return best


def precision_candidates(precision):
    """The precisions `auto` chooses from by measurement: fp32 and, where the hardware has it, a half
    precision (CPU autocast emulates bf16 without native instructions, far slower than fp32)."""
    if precision != "auto":
        return [precision]
    if on_gpu():
        return ["bf16" if torch.cuda.is_bf16_supported() else "fp16", "fp32"]
    return ["bf16", "fp32"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else ["fp32"]
