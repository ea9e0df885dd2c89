"""What a run cost beside what its plan said: metrics/train_cost.json."""
import psutil
import torch

from stages.common import peak_rss_bytes, write_json
from stages.train.device import on_gpu


def current_rss():
    return psutil.Process().memory_info().rss


def record_cost(path, estimate, seconds, outcome, checkpoint):
    """Write the plan beside what the run took (time, peak memory: the GPU's, or RSS of this process;
    checkpoint size) and its outcome (steps, why it stopped, the step kept and its validation loss)."""
    actual = {
        "seconds": round(seconds, 1),
        "peak_gib": round((torch.cuda.max_memory_reserved() if on_gpu() else peak_rss_bytes()) / 2**30, 3),
        "checkpoint_mib": round(sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) / 2**20, 1) if checkpoint else None,
    }
    write_json(path, {"estimate": estimate, "actual": actual, "outcome": outcome})
