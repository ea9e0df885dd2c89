"""What a run cost beside what its plan said: metrics/train_cost.json, and from it the figures runs
are compared by: metrics/train.json."""
import psutil
import torch

from stages.common import peak_rss_bytes, read_json, write_json
from stages.train.device import on_gpu


def current_rss():
    return psutil.Process().memory_info().rss


def record_cost(path, estimate, seconds, tokens, outcome, checkpoint):
    """Write the plan beside what the run took (time, tokens/s, peak memory: the GPU's, or RSS of this
    process; checkpoint size) and its outcome (steps, why it stopped, the step kept and its validation loss)."""
    actual = {
        "seconds": round(seconds, 1),
        "tokens_per_sec": round(tokens / seconds, 1),
        "peak_gib": round((torch.cuda.max_memory_reserved() if on_gpu() else peak_rss_bytes()) / 2**30, 3),
        "checkpoint_mib": round(sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) / 2**20, 1) if checkpoint else None,
    }
    write_json(path, {"estimate": estimate, "actual": actual, "outcome": outcome})


def write_train_metrics(cost_path, metrics_path):
    """The run's time, speed, the step kept and what stopped training (`max_steps` or `patience`; the
    cost record has the full sentence), named and sized for a column of `dvc exp show`."""
    cost = read_json(cost_path)
    write_json(metrics_path, {"train_seconds": cost["actual"]["seconds"], "train_tokens_per_sec": cost["actual"]["tokens_per_sec"],
                              "kept_step": cost["outcome"]["kept_step"], "stopped_by": cost["outcome"]["stopped_by"]})
