"""The tokenizer: a lossless byte-level BPE trained on the documents, or a base model's own."""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tolstoy import StageError
from tolstoy.files import reading
from tolstoy.model.bases import base_directory

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
    # transformers' auto classes import torch: imported for a base's tokenizer only
    from tolstoy.model.pretrained import pretrained_tokenizer

    base, directory = model_params.base, base_directory(model_params.base, model_params.revision)
    with reading(directory, f"the tokenizer of model.base={base!r}"):
        tokenizer = pretrained_tokenizer(directory)
    if not tokenizer.is_fast or tokenizer.eos_token_id is None:
        raise StageError(f"model.base={base!r}: its tokenizer must be a fast tokenizer with an end-of-text (eos) token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
