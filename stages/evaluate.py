"""evaluate: validation loss, perplexity and bits per character of MODEL on the val split of TOKENS,
and bits per character on each group of GROUPS with the style gap -> METRICS.

    python -m stages.evaluate TOKENS GROUPS MODEL METRICS
"""

import argparse
import math
from pathlib import Path

from tolstoy.config.params import add_params_options, stage_sections
from tolstoy.console import log, run_stage
from tolstoy.data.blocks import Blocks, bits_per_char
from tolstoy.device import inference_device
from tolstoy.evaluation.scores import group_scores, validation_loss
from tolstoy.files import reading, write_json
from tolstoy.model.pretrained import pretrained_model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tokens", type=Path, help="the token files with the val split")
    parser.add_argument("groups", type=Path, help="the prepared groups")
    parser.add_argument("model", type=Path, help="the model's directory")
    parser.add_argument("metrics", type=Path, help="the figures written (JSON)")
    add_params_options(parser)
    args = parser.parse_args(argv)
    params, group_params, train_params = stage_sections(args, "evaluate", "groups", "train")
    blocks = Blocks(args.tokens, "val", limit=params.max_blocks or None)
    with reading(args.model, "a model"):
        model = pretrained_model(args.model).eval().to(inference_device(train_params.accelerate_config))
    loss = validation_loss(model, blocks, params.batch_size)
    groups = group_scores(model, args.groups, params.batch_size, group_params.max_blocks, group_params.reference)
    metrics = {  # the figure runs are compared by first: its column comes first in `dvc exp show`
        "bits_per_char": round(bits_per_char(loss, blocks.chars_per_token), 5),
        "val_loss": round(loss, 5),
        "perplexity": round(math.exp(loss), 3),
        "val_blocks": len(blocks),
        "val_tokens": len(blocks) * blocks.block_size,
        **groups,
    }
    write_json(args.metrics, metrics)
    log.info(
        "evaluate: loss %.4f, perplexity %.2f, %.4f bits/char over %d tokens%s",
        loss,
        metrics["perplexity"],
        metrics["bits_per_char"],
        metrics["val_tokens"],
        "".join(f"; {name} {bits:.4f}" for name, bits in metrics.get("groups", {}).items()),
    )


if __name__ == "__main__":
    run_stage(main)
