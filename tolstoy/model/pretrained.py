"""Models and tokenizers read from a directory with transformers' own code, and model weights
from safetensors only (a pickle can run code).

A config naming code of its own (`auto_map`) is refused before anything is read: transformers
would otherwise ask "[y/N]" on a terminal and take the next line of standard input as the
answer (in `tools.generate --interactive`, the user's first prompt)."""

import json
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from tolstoy import StageError

CONFIGS = ("config.json", "tokenizer_config.json")  # where transformers looks for auto_map


def refuse_custom_code(directory):
    """StageError naming the config in `directory` that asks for code of its own. A config that
    cannot be read is left to transformers, which then reports it (and runs nothing)."""
    for name in CONFIGS:
        path = Path(directory) / name
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and config.get("auto_map"):
            named = ", ".join(map(str, config["auto_map"]))
            raise StageError(
                f"{path}: asks to run code of its own (auto_map: {named}); only transformers' own model code is used"
            )


def pretrained_tokenizer(directory):
    refuse_custom_code(directory)
    return AutoTokenizer.from_pretrained(directory, trust_remote_code=False)


def pretrained_model(directory, **options):
    """The causal language model in `directory`; `options` go to from_pretrained."""
    refuse_custom_code(directory)
    return AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=False, use_safetensors=True, **options)
