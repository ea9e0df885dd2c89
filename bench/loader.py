"""bench.performance's `loader` part: Trainer's dataloader settings for this project's recipe,
worker processes and pinned memory (which only a GPU uses), Trainer's defaults first."""

import pandas as pd

from bench.recipes import shapes, train_run
from tolstoy.device import precision_candidates

LOADER_SETTINGS = [(0, True), (0, False), (2, True)]  # (dataloader_num_workers, dataloader_pin_memory)


def bench_loader(results):
    """The default shape (the smallest model: data loading's largest share of a step) in the half
    precision where this machine has one, eager; two rounds in turn, the faster of each kept."""
    precision, shape = precision_candidates("auto")[0], shapes()[0]
    measured = {setting: [] for setting in LOADER_SETTINGS}
    for order in (LOADER_SETTINGS, LOADER_SETTINGS[::-1]):
        for workers, pinned in order:
            arguments = {"dataloader_num_workers": workers, "dataloader_pin_memory": pinned}
            measured[workers, pinned].append(train_run(shape, "ours", precision, False, arguments))
    best = {setting: max(runs, key=lambda run: run["tokens_per_sec"]) for setting, runs in measured.items()}
    base = best[LOADER_SETTINGS[0]]["tokens_per_sec"]
    rows = [
        {
            "config": shape.name,
            "precision": precision,
            "workers": workers,
            "pin_memory": pinned,
            "tokens_per_sec": run["tokens_per_sec"],
            "x_default": round(run["tokens_per_sec"] / base, 3),
            "loss_after": round(run["losses"][-1], 4),
        }
        for (workers, pinned), run in best.items()
    ]
    results["loader"] = rows
    return pd.DataFrame(rows)
