"""evaluate: validation loss, perplexity and bits per character of models/model -> metrics/eval.json,
and bits per character on each group of data/groups (texts not trained on) with the style gap:
a group's bits per character minus groups.reference's (the trained author's unseen works).

Bits per character divide the total loss by the characters the tokens encode, so models with
different tokenizers compare fairly.
"""

import math

import numpy as np
import torch

from stages.paths import EVAL_METRICS, GROUPS, MODEL, TOKENS
from tolstoy.config.params import load_params
from tolstoy.console import log, progress, run_stage
from tolstoy.data.blocks import Blocks, bits_per_char
from tolstoy.device import inference_device
from tolstoy.files import reading, write_json
from tolstoy.model.loss import causal_lm_loss
from tolstoy.model.pretrained import pretrained_model


@torch.inference_mode()
def validation_loss(model, blocks, batch_size):
    """Mean next-token loss (nats) over every predicted token of the blocks."""
    total = 0.0
    starts = range(0, len(blocks), batch_size)
    for start in progress(starts, len(starts), f"evaluate: batches of {batch_size} blocks"):
        ids = torch.from_numpy(
            np.stack([blocks[i]["input_ids"] for i in range(start, min(start + batch_size, len(blocks)))])
        ).to(model.device)
        total += causal_lm_loss(model, ids, ids).item() * len(ids)  # blocks are equal length
    return total / len(blocks)


def group_scores(model, batch_size, params):
    """{"groups": bits per character of each group, "style_gap": each other group's minus the reference's}."""
    scores = {}
    with reading(GROUPS, "the prepared groups"):
        names = sorted(p.name for p in GROUPS.iterdir() if p.is_dir())
    for name in names:
        blocks = Blocks(GROUPS / name / "tokens", "text", limit=params["max_blocks"] or None)
        scores[name] = round(bits_per_char(validation_loss(model, blocks, batch_size), blocks.chars_per_token), 5)
    reference = params["reference"]
    if not reference:
        return {"groups": scores} if scores else {}
    gaps = {name: round(bits - scores[reference], 5) for name, bits in scores.items() if name != reference}
    return {"groups": scores, "style_gap": {**gaps, "mean": round(sum(gaps.values()) / len(gaps), 5) if gaps else None}}


def main():
    params = load_params("evaluate")
    group_params = load_params("groups")
    blocks = Blocks(TOKENS, "val", limit=params["max_blocks"] or None)
    with reading(MODEL, "a model"):
        model = pretrained_model(MODEL).eval().to(inference_device(load_params("train")["accelerate_config"]))
    loss = validation_loss(model, blocks, params["batch_size"])
    metrics = {  # the figure runs are compared by first: its column comes first in `dvc exp show`
        "bits_per_char": round(bits_per_char(loss, blocks.chars_per_token), 5),
        "val_loss": round(loss, 5),
        "perplexity": round(math.exp(loss), 3),
        "val_blocks": len(blocks),
        "val_tokens": len(blocks) * blocks.block_size,
        **group_scores(model, params["batch_size"], group_params),
    }
    write_json(EVAL_METRICS, metrics)
    groups = "".join(f"; {name} {bits:.4f}" for name, bits in metrics.get("groups", {}).items())
    log.info(
        "evaluate: loss %.4f, perplexity %.2f, %.4f bits/char over %d tokens%s",
        loss,
        metrics["perplexity"],
        metrics["bits_per_char"],
        metrics["val_tokens"],
        groups,
    )


if __name__ == "__main__":
    run_stage(main)
