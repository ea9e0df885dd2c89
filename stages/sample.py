"""sample: continue the prompts in params with models/model -> metrics/samples.md (for people to
read) and metrics/samples.json (statistics of the continuations, per prompt and overall, for
`dvc exp show` to compare: see tolstoy/data/words.py)."""

import time

import torch
from transformers import set_seed

from stages.paths import MODEL, SAMPLE_METRICS, SAMPLE_STATISTICS, SAMPLES, TRAIN_WORDS
from tolstoy.config.params import GENERATION_KEYS, load_params
from tolstoy.console import log, run_stage
from tolstoy.data.words import text_statistics
from tolstoy.device import inference_device
from tolstoy.files import atomic_path, reading, write_json
from tolstoy.model.pretrained import pretrained_model, pretrained_tokenizer

SETTINGS = (*GENERATION_KEYS, "seed")


def fit_context(input_ids, max_new_tokens, context):
    """Keep the prompt's end and the number of new tokens within the model's positions."""
    max_new_tokens = min(max_new_tokens, context - 1)
    return input_ids[:, -(context - max_new_tokens) :], max_new_tokens


@torch.inference_mode()
def generate(model, tokenizer, prompt, params):
    """(continuation, number of new tokens) of `prompt` with the sampling params, within the context."""
    set_seed(params["seed"])
    input_ids, max_new_tokens = fit_context(
        tokenizer(prompt, return_tensors="pt")["input_ids"],
        params["max_new_tokens"],
        model.config.max_position_embeddings,
    )
    input_ids = input_ids.to(model.device)
    sampling = params["temperature"] > 0
    output = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=float(params["temperature"]) if sampling else None,  # transformers refuses an int (2, not 2.0)
        top_k=params["top_k"] if sampling else None,
        top_p=params["top_p"] if sampling else None,
        repetition_penalty=float(params["repetition_penalty"]),
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    new_tokens = output[0, input_ids.shape[1] :]
    return tokenizer.decode(new_tokens, skip_special_tokens=True), len(new_tokens)


def sample_statistics(prompts, continuations, vocabulary):
    by_prompt = {
        str(i): {"prompt": prompt, **text_statistics([text], vocabulary)}
        for i, (prompt, text) in enumerate(zip(prompts, continuations), 1)
    }
    return {"overall": text_statistics(continuations, vocabulary), "prompts": by_prompt}


def main():
    params = load_params("sample")
    with reading(MODEL, "a model and its tokenizer"):
        tokenizer = pretrained_tokenizer(MODEL)
        model = pretrained_model(MODEL).eval().to(inference_device(load_params("train")["accelerate_config"]))
    with reading(TRAIN_WORDS, "the words of the training text"):
        vocabulary = set(TRAIN_WORDS.read_text(encoding="utf-8").splitlines())
    lines = ["# Samples", "", ", ".join(f"{k}={params[k]}" for k in SETTINGS), ""]
    continuations, tokens, started = [], 0, time.perf_counter()
    for prompt in params["prompts"]:
        continuation, n = generate(model, tokenizer, prompt, params)
        continuations.append(continuation)
        tokens += n
        lines += [f"## {prompt}", "", f"**{prompt}**{continuation}", ""]
    seconds = time.perf_counter() - started
    statistics = sample_statistics(params["prompts"], continuations, vocabulary)
    with atomic_path(SAMPLES) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    write_json(SAMPLE_STATISTICS, statistics)
    write_json(
        SAMPLE_METRICS, {f"sample_{key}": value for key, value in statistics["overall"].items()}
    )  # compared across runs
    log.info(
        "sample: %d prompts, %d new tokens, %.1f tokens/s; distinct-2 %s, known words %s",
        len(params["prompts"]),
        tokens,
        tokens / seconds,
        statistics["overall"]["distinct_2"],
        statistics["overall"]["known_words"],
    )


if __name__ == "__main__":
    run_stage(main)
