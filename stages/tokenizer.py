"""tokenizer: train a lossless byte-level BPE tokenizer on the cleaned documents.

With model.base set (a directory under bases/, or a hub id at model.revision) the base model's
own tokenizer is saved instead: a pretrained model only understands the tokenizer it was trained with.
"""

import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from stages.paths import DOCS, TOKENIZER
from tolstoy import StageError
from tolstoy.config.params import load_params
from tolstoy.console import log, run_stage
from tolstoy.data.documents import count_documents, iter_documents
from tolstoy.files import atomic_path, reading
from tolstoy.model.bases import base_directory
from tolstoy.model.pretrained import pretrained_tokenizer

EOT = "<|endoftext|>"


def with_newlines(text):
    """The text's lines, each with its newline. The byte-level pre-tokenizer splits at newlines
    anyway, so the trainer counts what it would count in the whole text, while it buffers lines
    (not whole works: memory stays flat as the corpus grows)."""
    lines = text.split("\n")
    yield from (line + "\n" for line in lines[:-1])
    yield lines[-1]


def train_bpe(texts, vocab_size, min_frequency, show_progress=False):
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    bpe.train_from_iterator(texts, trainer)
    # clean_up_tokenization_spaces would turn " ," into "," on decode: not lossless.
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=EOT, eos_token=EOT, pad_token=EOT, clean_up_tokenization_spaces=False
    )


def base_tokenizer(model_params):
    base, directory = model_params["base"], base_directory(model_params)
    with reading(directory, f"the tokenizer of model.base={base!r}"):
        tokenizer = pretrained_tokenizer(directory)
    if not tokenizer.is_fast or tokenizer.eos_token_id is None:
        raise StageError(f"model.base={base!r}: its tokenizer must be a fast tokenizer with an end-of-text (eos) token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def main():
    params = load_params("tokenizer")
    model_params = load_params("model")
    base = model_params["base"]
    if base:
        tokenizer = base_tokenizer(model_params)
    else:
        large = count_documents(DOCS) >= 50
        shown_as = (
            "tokenizer: documents read" if large and not sys.stderr.isatty() else None
        )  # a terminal shows the trainer's own bars
        lines = (line for doc in iter_documents(DOCS, ["text"], shown_as) for line in with_newlines(doc["text"]))
        tokenizer = train_bpe(
            lines, params["vocab_size"], params["min_frequency"], show_progress=large and sys.stderr.isatty()
        )
    with atomic_path(TOKENIZER) as tmp:
        tokenizer.save_pretrained(tmp)
    log.info(
        "tokenizer: %s, %d tokens, end-of-text %r",
        f"from {base}" if base else "trained byte-level BPE",
        len(tokenizer),
        tokenizer.eos_token,
    )


if __name__ == "__main__":
    run_stage(main)
