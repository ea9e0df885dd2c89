"""GPU benchmark: GPT-2 124M (the tutorial's GPT2Config: 12 x 768, block 1024, 50,257 tokens)
with this project's train settings (bf16 autocast, torch.compile, SDPA, fused AdamW) on random
tokens for a few hundred steps; prints tokens/s and MFU against the GPU's bf16 dense datasheet
peak (steady state: the second half of the steps), and writes JSON. Takes about 2 minutes on an H100.

    python -m bench.gpu [--steps 300] [--batch 32] [--json bench/results/gpu.json]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import GPT2Config

from bench.performance import ROOT, block_list, train_run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32, help="blocks of 1024 tokens per step")
    parser.add_argument("--n-layer", type=int, default=12, help="fewer for a quick check of the script on CPU")
    parser.add_argument("--n-embd", type=int, default=768)
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/gpu.json")
    args = parser.parse_args()
    config = GPT2Config(n_layer=args.n_layer, n_embd=args.n_embd, n_head=max(1, args.n_embd // 64))
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=args.batch * 1024 * 8, dtype=np.int64)
    precision = "bf16" if torch.cuda.is_available() else "fp32"
    run = train_run(config, block_list(ids, 1024), args.steps, "ours", args.batch, min(50, args.steps), precision, True)  # a loss read is a GPU sync
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    row = {"device": device, "config": f"{args.n_layer}x{args.n_embd}/1024/{config.vocab_size}", "batch": args.batch, "steps": args.steps,
           "precision": run["precision"], "tokens_per_sec": run["tokens_per_sec"], "mfu_%": run["mfu_%"], "warmup_s": run["warmup_s"], "loss_after": round(run["losses"][-1], 4)}
    print(pd.DataFrame([row]).to_string(index=False))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
