"""Samples: a prompt continued with the sampling settings, and statistics of the continuations
(see tolstoy/data/words.py)."""

import torch
from transformers import set_seed

from tolstoy.config.params import GENERATION_KEYS
from tolstoy.data.words import text_statistics

SETTINGS = (*GENERATION_KEYS, "seed")


def fit_context(input_ids, max_new_tokens, context):
    """Keep the prompt's end and the number of new tokens within the model's positions."""
    max_new_tokens = min(max_new_tokens, context - 1)
    return input_ids[:, -(context - max_new_tokens) :], max_new_tokens


@torch.inference_mode()
def generate(model, tokenizer, prompt, params):
    """(continuation, number of new tokens) of `prompt` with the sampling params, within the context."""
    set_seed(params.seed)
    input_ids, max_new_tokens = fit_context(
        tokenizer(prompt, return_tensors="pt")["input_ids"],
        params.max_new_tokens,
        model.config.max_position_embeddings,
    )
    input_ids = input_ids.to(model.device)
    sampling = params.temperature > 0
    output = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=float(params.temperature) if sampling else None,  # transformers refuses an int (2, not 2.0)
        top_k=params.top_k if sampling else None,
        top_p=params.top_p if sampling else None,
        repetition_penalty=float(params.repetition_penalty),
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
