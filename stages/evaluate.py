"""evaluate: validation loss, perplexity and bits per character of models/model -> metrics/eval.json.

Bits per character divide the total loss by the characters the validation tokens encode, so
models with different tokenizers compare fairly.
"""
import math

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from stages.blocks import Blocks, bits_per_char
from stages.common import log, reading, run_stage, write_json
from stages.params import load_params
from stages.paths import EVAL_METRICS, MODEL, TOKENS


@torch.inference_mode()
def validation_loss(model, blocks, batch_size):
    """Mean next-token loss (nats) over every predicted token of the blocks."""
    total = 0.0
    for start in range(0, len(blocks), batch_size):
        ids = torch.from_numpy(np.stack([blocks[i]["input_ids"] for i in range(start, min(start + batch_size, len(blocks)))]))
        total += model(input_ids=ids, labels=ids).loss.item() * len(ids)  # blocks are equal length
    return total / len(blocks)


def main():
    params = load_params("evaluate")
    blocks = Blocks(TOKENS, "val", limit=params["max_blocks"] or None)
    with reading(MODEL, "a model"):
        model = AutoModelForCausalLM.from_pretrained(MODEL).eval()
    loss = validation_loss(model, blocks, params["batch_size"])
    metrics = {
        "val_loss": round(loss, 5),
        "perplexity": round(math.exp(loss), 3),
        "bits_per_char": round(bits_per_char(loss, blocks.chars_per_token), 5),
        "val_blocks": len(blocks),
        "val_tokens": len(blocks) * blocks.block_size,
    }
    write_json(EVAL_METRICS, metrics)
    log.info("evaluate: loss %(val_loss).4f, perplexity %(perplexity).2f, %(bits_per_char).4f bits/char over %(val_tokens)d tokens", metrics)


if __name__ == "__main__":
    run_stage(main)
