"""GPU benchmark: GPT-2 124M (12 x 768, block 1024, 50,257 tokens, built by the train stage)
with this project's train settings (bf16 autocast, torch.compile, SDPA, fused AdamW) on random
tokens for a few hundred steps, twice: with transformers' loss and 50,257 embedding rows, and as
the train stage builds it (its own loss, 50,304 rows); prints tokens/s and MFU against the
GPU's bf16 dense datasheet peak (steady state: the second half of the steps), and writes JSON.
--settings runs the train stage's model under the other settings instead: memory not pinned, two
loader workers, and fp32 with TF32 off and on (Trainer turns TF32 on whenever it compiles on a recent GPU).
--speed runs the train stage's model as it trains and beside it each change that might raise its MFU,
one at a time: AdamW not fused, twice the micro-batch, CUDA graphs (compile mode reduce-overhead),
each attention kernel SDPA can be held to, SDPA given the causal flag and no mask (train.attn_implementation
sdpa_causal) with its own choice of kernel and held to flash, memory not pinned and two loader workers.

    python -m bench.gpu [--steps 300] [--batch 32] [--block 1024] [--settings | --speed] [--json bench/results/gpu.json]
"""

import argparse
import contextlib
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.recipes import PARAMS, project_arguments, timed_training, training_forward
from bench.workspace import ROOT
from tolstoy.config.params import ModelParams
from tolstoy.model.build import scratch_model

VOCAB, BLOCK = 50257, 1024  # GPT-2's


@dataclasses.dataclass(frozen=True)
class Row:
    """One way to train the model: as the train stage trains it unless a field says otherwise."""

    own_loss: bool = True
    vocab_multiple: int = 64
    precision: str = "half"  # bf16 on a GPU, fp32 on a CPU
    arguments: dict = dataclasses.field(default_factory=dict)  # other TrainingArguments
    backend: SDPBackend | None = None  # the one attention kernel SDPA may use
    attention: str = PARAMS["train"]["attn_implementation"]


VARIANTS = {
    "transformers loss, 50,257 rows": Row(own_loss=False, vocab_multiple=1),
    "own loss, 50,304 rows": Row(),
}  # before and as the stage trains
SETTINGS = {
    "own loss, memory not pinned": Row(arguments={"dataloader_pin_memory": False}),
    "own loss, 2 loader workers": Row(arguments={"dataloader_num_workers": 2}),
    "own loss, fp32, TF32 off": Row(precision="fp32", arguments={"tf32": False}),
    # tf32 None: Trainer turns TF32 on when it compiles on a GPU
    "own loss, fp32, TF32 on": Row(precision="fp32", arguments={"tf32": None}),
}
SPEED = {
    "as trained": Row(),
    "AdamW not fused": Row(arguments={"optim": "adamw_torch"}),
    "micro-batch x2": Row(arguments={"per_device_train_batch_size": None}),  # None: twice --batch
    "CUDA graphs (reduce-overhead)": Row(arguments={"torch_compile_mode": "reduce-overhead"}),
    "SDPA flash only": Row(backend=SDPBackend.FLASH_ATTENTION),
    "SDPA cuDNN only": Row(backend=SDPBackend.CUDNN_ATTENTION),
    "SDPA efficient only": Row(backend=SDPBackend.EFFICIENT_ATTENTION),
    "SDPA causal flag, no mask (sdpa_causal)": Row(attention="sdpa_causal"),
    "sdpa_causal, flash only": Row(attention="sdpa_causal", backend=SDPBackend.FLASH_ATTENTION),
    "memory not pinned": Row(arguments={"dataloader_pin_memory": False}),
    "2 loader workers": Row(arguments={"dataloader_num_workers": 2}),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32, help="blocks per step")
    parser.add_argument("--block", type=int, default=BLOCK, help="tokens per block; fewer for a quick check on CPU")
    parser.add_argument("--n-layer", type=int, default=12, help="fewer for a quick check of the script on CPU")
    parser.add_argument("--n-embd", type=int, default=768)
    rows_wanted = parser.add_mutually_exclusive_group()
    rows_wanted.add_argument(
        "--settings", action="store_true", help="the other settings' rows instead of the loss and vocabulary ones"
    )
    rows_wanted.add_argument(
        "--speed", action="store_true", help="the rows of changes that might raise the train stage's MFU"
    )
    parser.add_argument("--eager", action="store_true", help="no torch.compile: a quick check of the rows on CPU")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/gpu.json")
    return parser.parse_args()


def result_row(device, args, variant, training, precision, run):
    return {
        "device": device,
        "config": f"{args.n_layer}x{args.n_embd}/{args.block}/{VOCAB}",
        "variant": variant,
        "batch": training.per_device_train_batch_size,
        "steps": args.steps,
        "precision": precision,
        **{key: run[key] for key in ("tokens_per_sec", "mfu_%", "peak_gflops", "mfu_check", "warmup_s")},
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "loss_after": round(run["losses"][-1], 4),
    }


def main():
    args = parse_args()
    shape = ModelParams(
        **{
            **PARAMS["model"],
            "n_layer": args.n_layer,
            "n_embd": args.n_embd,
            "n_head": max(1, args.n_embd // 64),
            "n_positions": args.block,
        }
    )
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(args.batch * 16, args.block), dtype=np.int64)
    blocks = [{"input_ids": row, "labels": row} for row in ids]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    rows = []
    variants = SPEED if args.speed else SETTINGS if args.settings else VARIANTS
    for variant, row in variants.items():
        arguments = {
            key: 2 * args.batch if value is None and key == "per_device_train_batch_size" else value
            for key, value in row.arguments.items()
        }
        precision = "bf16" if row.precision == "half" and torch.cuda.is_available() else "fp32"
        # logging every 50 steps at most: a loss read is a GPU sync
        training = project_arguments(args.steps, args.batch, min(50, args.steps), precision, not args.eager)
        torch.manual_seed(0)
        model = training_forward(
            scratch_model(shape, VOCAB, VOCAB - 1, VOCAB - 1, row.attention, row.vocab_multiple), row.own_loss
        )
        training = dataclasses.replace(training, **arguments)
        with sdpa_kernel(row.backend) if row.backend else contextlib.nullcontext():
            try:
                run = timed_training(model, blocks, training, precision)
            except Exception as error:  # a kernel this GPU or build lacks: the row says so, the others still run
                rows.append({"device": device, "variant": variant, "error": repr(error)[:300]})
                write(rows, args.json)
                continue
        if "tf32" in arguments:  # TF32's peak is not plain fp32's: these rows compare by tokens/s
            run.update({"mfu_%": None, "mfu_check": ""})
        rows.append(result_row(device, args, variant, training, precision, run))
        write(rows, args.json)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    print(pd.DataFrame(rows).to_string(index=False))


def write(rows, path):
    """The rows so far: a run stopped at its time limit keeps the rows it finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
