"""sample: continue sample.prompts with MODEL -> SAMPLES (for people to read), STATISTICS of the
continuations per prompt and overall, and METRICS (the overall ones, for `dvc exp show` to compare).

    python -m stages.sample MODEL TRAIN_WORDS SAMPLES STATISTICS METRICS

TRAIN_WORDS lists the words of the training text: a continuation's known words are among them.
"""

import argparse
import time
from pathlib import Path

from tolstoy.config.params import add_params_options, stage_sections
from tolstoy.console import log, run_stage
from tolstoy.device import inference_device
from tolstoy.evaluation.samples import SETTINGS, generate, sample_statistics
from tolstoy.files import atomic_path, reading, write_json
from tolstoy.model.pretrained import pretrained_model, pretrained_tokenizer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the model's directory")
    parser.add_argument("train_words", type=Path, help="the words of the training text, one per line")
    parser.add_argument("samples", type=Path, help="the continuations written (Markdown)")
    parser.add_argument("statistics", type=Path, help="their statistics written (JSON)")
    parser.add_argument("metrics", type=Path, help="the overall statistics written (JSON)")
    add_params_options(parser)
    args = parser.parse_args(argv)
    params, train_params = stage_sections(args, "sample", "train")
    with reading(args.model, "a model and its tokenizer"):
        tokenizer = pretrained_tokenizer(args.model)
        model = pretrained_model(args.model).eval().to(inference_device(train_params.accelerate_config))
    with reading(args.train_words, "the words of the training text"):
        vocabulary = set(args.train_words.read_text(encoding="utf-8").splitlines())
    lines = ["# Samples", "", ", ".join(f"{k}={getattr(params, k)}" for k in SETTINGS), ""]
    continuations, tokens, started = [], 0, time.perf_counter()
    for prompt in params.prompts:
        continuation, n = generate(model, tokenizer, prompt, params)
        continuations.append(continuation)
        tokens += n
        lines += [f"## {prompt}", "", f"**{prompt}**{continuation}", ""]
    seconds = time.perf_counter() - started
    statistics = sample_statistics(params.prompts, continuations, vocabulary)
    with atomic_path(args.samples) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    write_json(args.statistics, statistics)
    write_json(args.metrics, {f"sample_{key}": value for key, value in statistics["overall"].items()})
    log.info(
        "sample: %d prompts, %d new tokens, %.1f tokens/s; distinct-2 %s, known words %s",
        len(params.prompts),
        tokens,
        tokens / seconds,
        statistics["overall"]["distinct_2"],
        statistics["overall"]["known_words"],
    )


if __name__ == "__main__":
    run_stage(main)
