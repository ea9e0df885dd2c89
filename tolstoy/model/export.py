"""models/model as any transformers client can use it: the tokenizer knows the context, the
generation config holds the sampling defaults and the end-of-text ids, and a model card says
what the model is and how it was made."""

import json

from transformers import GenerationConfig

from tolstoy.files import atomic_path
from tolstoy.training.arguments import describe


def write_generation_config(model_dir, tokenizer, sampling):
    """The sample params (without prompts and seed) as the model's generation defaults."""
    # floats: transformers refuses an int temperature or penalty (2, not 2.0)
    settings = {"max_new_tokens": sampling.max_new_tokens, "repetition_penalty": float(sampling.repetition_penalty)}
    if sampling.temperature > 0:
        settings.update(
            do_sample=True, temperature=float(sampling.temperature), top_k=sampling.top_k, top_p=sampling.top_p
        )
    ids = tokenizer.eos_token_id
    config = GenerationConfig(bos_token_id=ids, eos_token_id=ids, pad_token_id=tokenizer.pad_token_id, **settings)
    with atomic_path(model_dir / "generation_config.json") as tmp:
        tmp.write_text(config.to_json_string(use_diff=True), encoding="utf-8")


def base_line(base):
    if not base:
        return "Trained from scratch."
    commit = f" at commit {base['commit']}" if base["commit"] else ""
    return f"Fine-tuned from `{base['base']}`{commit}, whose model files have sha256 {base['sha256']}."


def model_card(model_config, params, tokens_meta, log_history, base, result):
    """README.md of the exported model: base, data, params, the step kept and why training stopped, how to use it."""
    losses = [row["loss"] for row in log_history if "loss" in row]
    val = tokens_meta["val"]
    lines = [
        "---\nlanguage: ru\nlibrary_name: transformers\npipeline_tag: text-generation\n---",
        "",
        "# tolstoy-gpt",
        "",
        f"A {model_config.model_type} model ({model_config.num_hidden_layers} layers × {model_config.hidden_size}, "
        f"{model_config.num_attention_heads} heads, context {model_config.max_position_embeddings}, vocabulary "
        f"{model_config.vocab_size}) trained by the train stage of tolstoy-gpt "
        "(`dvc repro`) on novels of Lev Tolstoy from az.lib.ru, cleaned and tokenized by the "
        "pipeline's earlier stages. " + base_line(base),
        "",
        "## Data",
        "",
        f"Training tokens: {tokens_meta['train']['tokens']:,}; validation tokens: {val['tokens']:,} "
        f"({val['chars'] / val['tokens']:.2f} characters per token).",
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(params, indent=2, ensure_ascii=False),
        "```",
        "",
        "## Metrics",
        "",
        f"Final training loss {losses[-1]:.4f}. Exported: {describe(result)}. "
        "The evaluate stage's full-validation figures are in the repository's `metrics/eval.json`.",
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'generate = pipeline("text-generation", model="models/model")',
        'print(generate("Наташа")[0]["generated_text"])',
        "# a prompt longer than the context: keep its end, leave room for the new tokens",
        'generate(long_prompt, truncation=True, handle_long_generation="hole", max_new_tokens=80)',
        "```",
        "",
        "Sampling defaults (generation_config.json) come from the `sample` params; the context comes from "
        "`tokenizer_config.json` (`model_max_length`, prompts truncated from the left).",
        "",
    ]
    return "\n".join(lines)
