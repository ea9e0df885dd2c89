"""Continue your own prompt with the trained model, without touching any DVC output.

    python -m tools.generate "Наташа вошла в комнату"          # one prompt
    python -m tools.generate --interactive                      # a prompt per line, until EOF
    python -m tools.generate "Пьер" --temperature 0 --max-new-tokens 40 --model models/model

Sampling defaults come from the `sample` section of params.yaml; a prompt longer than the
model's context keeps its end, and the new tokens stop at the last position.
"""

import argparse
import sys
from pathlib import Path

from tolstoy.config.params import load_sections
from tolstoy.console import run_stage
from tolstoy.evaluation.samples import SETTINGS, generate
from tolstoy.files import reading
from tolstoy.model.pretrained import pretrained_model, pretrained_tokenizer

MODEL = Path("models/model")  # the train stage's, as dvc.yaml names it


def arguments(defaults):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prompt", nargs="?", help="the text to continue")
    parser.add_argument("--interactive", action="store_true", help="read prompts from standard input, one per line")
    parser.add_argument("--model", default=str(MODEL), help=f"model directory (default {MODEL})")
    for key in SETTINGS:
        kind = int if key in ("max_new_tokens", "top_k", "seed") else float
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            type=kind,
            default=getattr(defaults, key),
            help=f"default {getattr(defaults, key)}",
        )
    args = parser.parse_args()
    if not args.interactive and not args.prompt:
        parser.error("give a prompt, or --interactive")
    return args


def main():
    (defaults,) = load_sections("sample")
    args = arguments(defaults)
    with reading(args.model, "a model and its tokenizer"):
        tokenizer = pretrained_tokenizer(args.model)
        model = pretrained_model(args.model).eval()
    settings = defaults.model_copy(update={key: getattr(args, key) for key in SETTINGS})
    prompts = (line.rstrip("\n") for line in sys.stdin) if args.interactive else [args.prompt]
    for prompt in filter(None, prompts):
        continuation, _ = generate(model, tokenizer, prompt, settings)
        print(prompt + continuation, flush=True)


if __name__ == "__main__":
    run_stage(main)
