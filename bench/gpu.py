"""GPU benchmark: GPT-2 124M (12 x 768, block 1024, 50,257 tokens, built by the train stage)
with this project's train settings (bf16 autocast, torch.compile, SDPA, fused AdamW) on random
tokens for a few hundred steps, twice: with transformers' loss and 50,257 embedding rows, and as
the train stage builds it (its own loss, 50,304 rows); prints tokens/s and MFU against the
GPU's bf16 dense datasheet peak (steady state: the second half of the steps), and writes JSON.

    python -m bench.gpu [--steps 300] [--batch 32] [--json bench/results/gpu.json]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.recipes import PARAMS, project_arguments, timed_training, training_forward
from stages.train.model import scratch_model
from tools.workspace import ROOT

VOCAB, BLOCK = 50257, 1024  # GPT-2's
VARIANTS = {"transformers loss, 50,257 rows": (False, 1), "own loss, 50,304 rows": (True, 64)}  # before and as the stage trains


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32, help="blocks of 1024 tokens per step")
    parser.add_argument("--n-layer", type=int, default=12, help="fewer for a quick check of the script on CPU")
    parser.add_argument("--n-embd", type=int, default=768)
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/gpu.json")
    args = parser.parse_args()
    shape = {**PARAMS["model"], "n_layer": args.n_layer, "n_embd": args.n_embd, "n_head": max(1, args.n_embd // 64), "n_positions": BLOCK}
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(args.batch * 8, BLOCK), dtype=np.int64)
    blocks = [{"input_ids": row, "labels": row} for row in ids]
    precision = "bf16" if torch.cuda.is_available() else "fp32"
    training = project_arguments(args.steps, args.batch, min(50, args.steps), precision, True)  # a loss read is a GPU sync
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    rows = []
    for variant, (own_loss, multiple) in VARIANTS.items():
        torch.manual_seed(0)
        model = training_forward(scratch_model(shape, VOCAB, VOCAB - 1, VOCAB - 1, PARAMS["train"]["attn_implementation"], multiple), own_loss)
        run = timed_training(model, blocks, training, precision)
        rows.append({"device": device, "config": f"{args.n_layer}x{args.n_embd}/{BLOCK}/{VOCAB}", "variant": variant, "batch": args.batch,
                     "steps": args.steps, "precision": precision, **{key: run[key] for key in ("tokens_per_sec", "mfu_%", "peak_gflops", "mfu_check", "warmup_s")},
                     "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
                     "loss_after": round(run["losses"][-1], 4)})
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    print(pd.DataFrame(rows).to_string(index=False))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
