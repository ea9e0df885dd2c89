"""Validation loss over blocks, and bits per character on groups of texts not trained on with the
style gap: a group's bits per character minus the reference group's (the trained author's unseen works).

Bits per character divide the total loss by the characters the tokens encode, so models with
different tokenizers compare fairly.
"""

import numpy as np
import torch

from tolstoy.console import progress
from tolstoy.data.blocks import Blocks, bits_per_char
from tolstoy.files import reading
from tolstoy.model.loss import causal_lm_loss


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


def group_scores(model, groups, batch_size, max_blocks, reference):
    """{"groups": bits per character of each group prepared in the directory `groups` (max_blocks of each,
    0: all), "style_gap": each other group's minus the reference's (none without a reference)}."""
    scores = {}
    with reading(groups, "the prepared groups"):
        names = sorted(p.name for p in groups.iterdir() if p.is_dir())
    for name in names:
        blocks = Blocks(groups / name / "tokens", "text", limit=max_blocks or None)
        scores[name] = round(bits_per_char(validation_loss(model, blocks, batch_size), blocks.chars_per_token), 5)
    if not reference:
        return {"groups": scores} if scores else {}
    gaps = {name: round(bits - scores[reference], 5) for name, bits in scores.items() if name != reference}
    return {"groups": scores, "style_gap": {**gaps, "mean": round(sum(gaps.values()) / len(gaps), 5) if gaps else None}}
