import shutil

import pytest
from transformers import AutoTokenizer

from bench import sites
from stages import tokenizer as tokenizer_stage
from tests.helpers import call_stage, tiny_params, write_params
from tolstoy import StageError

TEXTS = [p for seed in range(4) for p in sites.paragraphs(seed, 50)]
UNSEEN = [
    "Пьер закашлялся и  сказал: «Ça ira!» — 1812 год.",
    "  leading and trailing spaces \n\n\ttabs\r\n",
    "漢字とカタカナ, emoji 🐻‍❄️🇷🇺, combining й vs й, \u200b zero-width, \U0001d11e",
    "<|endoftext|> as text",
    "",
]


@pytest.fixture(scope="module")
def bpe():
    return tokenizer_stage.train_bpe(iter(TEXTS), vocab_size=400, min_frequency=2)


@pytest.mark.parametrize("text", UNSEEN + TEXTS[:3])
def test_decode_encode_is_lossless_for_any_text(bpe, text):
    ids = bpe(text, add_special_tokens=False)["input_ids"]
    assert bpe.decode(ids) == text


def test_never_unknown_and_has_end_of_text(bpe):
    assert bpe.unk_token is None
    assert bpe.eos_token == bpe.bos_token == bpe.pad_token == "<|endoftext|>"
    assert bpe.convert_tokens_to_ids("<|endoftext|>") == bpe.eos_token_id == 0
    assert len(bpe) == 400


def test_learns_merges_for_russian(bpe):
    word = "гостиную"
    assert len(bpe(word, add_special_tokens=False)["input_ids"]) < len(word.encode())


def test_saved_tokenizer_reloads_as_fast_tokenizer(built):
    loaded = AutoTokenizer.from_pretrained(built / "models/tokenizer")
    assert loaded.is_fast and loaded.eos_token == "<|endoftext|>"
    assert loaded.decode(loaded(UNSEEN[2])["input_ids"]) == UNSEEN[2]


def test_base_model_tokenizer_is_used_instead_of_training(built_copy):
    params = tiny_params([])
    params["tokenizer"]["vocab_size"] = 300
    shutil.copytree("models/model", "bases/pretrained")
    params["model"]["base"] = "bases/pretrained"
    write_params(".", params)
    call_stage("tokenizer")
    saved = AutoTokenizer.from_pretrained("models/tokenizer")
    base = AutoTokenizer.from_pretrained(built_copy / "models/model")
    assert saved.get_vocab() == base.get_vocab() and len(saved) != 300


def test_base_without_a_tokenizer_is_named(project):
    (project / "bases/empty").mkdir(parents=True)
    params = tiny_params([])
    params["model"]["base"] = "bases/empty"
    write_params(".", params)
    with pytest.raises(
        StageError, match=r"^bases/empty: cannot be read as the tokenizer of model.base='bases/empty' \("
    ):
        call_stage("tokenizer")


def test_training_on_lines_learns_what_training_on_whole_texts_learns():
    texts = ["\n".join(paras) for _, paras in sites.work("lines", chapters=4, per_chapter=30)]
    whole = tokenizer_stage.train_bpe(iter(texts), 300, 2)
    lines = tokenizer_stage.train_bpe((line for text in texts for line in tokenizer_stage.with_newlines(text)), 300, 2)
    assert lines.backend_tokenizer.to_str() == whole.backend_tokenizer.to_str()
    assert "".join(tokenizer_stage.with_newlines(texts[0])) == texts[0]
