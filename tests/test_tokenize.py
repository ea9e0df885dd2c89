from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from bench.workspace import stage_command
from tests.helpers import call_stage, python_env, run, tiny_params, write_params
from tolstoy import StageError
from tolstoy.data import splits
from tolstoy.data import tokens as token_files
from tolstoy.data.blocks import Blocks
from tolstoy.data.tokenizer import train_bpe
from tolstoy.files import read_json, write_json


def test_spans_are_whole_paragraphs_of_at_least_span_chars():
    text = "\n".join(f"абзац {i} " + "слово " * 10 for i in range(20))
    spans = list(splits.spans(text, 200))
    assert "\n".join(spans) == text
    assert all(len(s) >= 200 for s in spans[:-1])


def test_validation_is_spread_over_every_part_and_disjoint_from_train(built):
    params = tiny_params([])["tokenize"]
    texts = list(pd.read_parquet(built / "data/clean/docs.parquet")["text"])
    n_spans = sum(1 for t in texts for _ in splits.spans(t, params["span_chars"]))
    val = splits.choose_validation(n_spans, params["val_fraction"], params["seed"])
    segments = list(splits.segments(texts, params["span_chars"], val))
    val_text = "\n".join(text for split, text in segments if split == "val")
    train_text = "\n".join(text for split, text in segments if split == "train")
    assert val_text and train_text
    val_paragraphs, train_paragraphs = set(val_text.split("\n")), set(train_text.split("\n"))
    assert {p for p in val_paragraphs & train_paragraphs if not p.startswith("Глава")} == set()
    # every paragraph of the corpus lands in exactly one split, in order
    assert sorted(val_paragraphs | train_paragraphs) == sorted({p for t in texts for p in t.split("\n")})
    # validation is not just the tail: its spans are spread over the corpus
    assert min(val) < n_spans / 2 <= max(val)


def test_split_is_seeded():
    assert splits.choose_validation(100, 0.1, 1) == splits.choose_validation(100, 0.1, 1)
    assert splits.choose_validation(100, 0.1, 1) != splits.choose_validation(100, 0.1, 2)
    assert len(splits.choose_validation(100, 0.1, 1)) == 10


def test_token_files_decode_back_to_the_text_with_separators(built):
    meta = read_json(built / "data/tokens/meta.json")
    tokenizer = AutoTokenizer.from_pretrained(built / "models/tokenizer")
    for split in ("train", "val"):
        ids = np.fromfile(built / f"data/tokens/{split}.bin", dtype=meta["dtype"])
        assert len(ids) == meta[split]["tokens"] and ids[-1] == meta["eot_id"]
        segments = tokenizer.decode(ids).split("<|endoftext|>")[:-1]
        assert sum(map(len, segments)) == meta[split]["chars"]
        assert meta[split]["blocks"] == len(ids) // meta["block_size"]
    metrics = read_json(built / "metrics/tokenize.json")
    assert metrics["train_tokens"] == meta["train"]["tokens"] and metrics["val_tokens"] == meta["val"]["tokens"]
    assert 1 < metrics["bytes_per_token"] < 20


def test_blocks_dataset_reads_consecutive_blocks(built):
    blocks = Blocks(built / "data/tokens", "train")
    ids = np.fromfile(built / "data/tokens/train.bin", dtype=read_json(built / "data/tokens/meta.json")["dtype"])
    assert list(blocks[1]["input_ids"]) == list(ids[32:64])
    subset = Blocks(built / "data/tokens", "train", limit=3)
    assert len(subset) == 3 and subset.stride == len(blocks) // 3


def test_corpus_too_small_for_validation_is_an_error(built_copy):
    params = tiny_params([])
    params["tokenize"]["span_chars"] = 10_000_000  # every document one span... and too few spans
    docs = pd.read_parquet("data/clean/docs.parquet").head(1)
    docs.to_parquet("data/clean/docs.parquet")
    write_params(".", params)
    with pytest.raises(StageError, match="too small to split off a non-empty validation set"):
        call_stage("tokenize")


def test_split_smaller_than_a_block_is_an_error(built_copy):
    params = tiny_params([])
    params["tokenize"].update(block_size=1_000_000)
    write_params(".", params)
    before = read_json("data/tokens/meta.json")
    with pytest.raises(
        StageError, match=r"the train split has \d+ tokens, fewer than one block of tokenize.block_size=1000000"
    ):
        call_stage("tokenize")
    assert read_json("data/tokens/meta.json") == before  # the previous output is untouched


def test_text_encoded_in_pieces_has_the_ids_of_the_whole_text():
    rng = np.random.default_rng(0)
    # the whitespace a cut must respect: blank lines, indents, trailing spaces, tabs...
    chunks = ["Пьер", "сказал", "—", "«Да»", ",", " ", "  ", "\n", "\n\n", " \n", "\n ", "\t", "12", "ё", "!"]
    text = "".join(rng.choice(chunks, size=20_000))
    # ...and a tokenizer with merges across it (a cut inside whitespace or a word changes these ids)
    tokenizer = train_bpe(iter([text]), vocab_size=400, min_frequency=2).backend_tokenizer
    cut = list(token_files.pieces(text, size=50))
    assert "".join(cut) == text and len(cut) > 100
    whole = tokenizer.encode(text, add_special_tokens=False).ids
    assert [i for piece in cut for i in tokenizer.encode(piece, add_special_tokens=False).ids] == whole


@pytest.mark.parametrize("separator", [" ", "\r\n", "\n    "])
def test_pieces_stay_small_in_text_without_paragraph_breaks(separator):
    text = separator.join(["Пьер сказал: «Да»."] * 5000)  # one line, CRLF lines, indented lines
    cut = list(token_files.pieces(text, size=1000))
    assert "".join(cut) == text and max(map(len, cut)) < 1000 + 25


def test_tokenizer_without_an_end_of_text_token_is_an_error(built_copy):
    config = read_json("models/tokenizer/tokenizer_config.json")
    config["eos_token"] = None
    write_json("models/tokenizer/tokenizer_config.json", config)
    before = read_json("data/tokens/meta.json")
    with pytest.raises(StageError, match="models/tokenizer has no end-of-text"):
        call_stage("tokenize")
    assert read_json("data/tokens/meta.json") == before


def test_token_files_are_the_same_bytes_with_one_worker_or_two(built_copy):
    outputs = []
    for workers in ("1", "2"):
        run(stage_command("tokenize"), built_copy, env=python_env(TOLSTOY_WORKERS=workers))
        outputs.append(
            {p.name: p.read_bytes() for p in [*Path("data/tokens").iterdir(), Path("metrics/tokenize.json")]}
        )
    assert outputs[0] == outputs[1] and len(outputs[0]) == 5


def test_a_worker_count_that_is_not_a_positive_integer_is_named(built_copy):
    result = run(stage_command("tokenize"), built_copy, check=False, env=python_env(TOLSTOY_WORKERS="two"))
    assert (
        result.returncode == 2
        and result.stderr.strip().splitlines()[-1] == "error: TOLSTOY_WORKERS='two' must be a positive integer"
    )
