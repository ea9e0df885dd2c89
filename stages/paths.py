"""Where every stage reads and writes (dvc.yaml declares the same paths as deps and outs), by the
stage that writes them."""

from pathlib import Path

PARAMS_CHECKED = Path("data/params.ok")  # validate
RAW = Path("data/raw")  # fetch
MANIFEST = RAW / "manifest.json"
DOCS = Path("data/clean/docs.parquet")  # clean
CLEAN_METRICS = Path("metrics/clean.json")
CLEAN_REPORT = Path("metrics/clean_documents.csv")
TOKENIZER = Path("models/tokenizer")  # tokenizer
TOKENS = Path("data/tokens")  # tokenize
TRAIN_WORDS = TOKENS / "train_words.txt"  # every word of the train split, once
TOKENIZE_METRICS = Path("metrics/tokenize.json")
GROUPS = Path("data/groups")  # groups: GROUPS/<name>/tokens like TOKENS
MODEL = Path("models/model")  # train
CHECKPOINTS = Path("models/checkpoints")
TRAIN_LIVE = Path("metrics/train")
TRAIN_COST = Path("metrics/train_cost.json")
TRAIN_METRICS = Path("metrics/train.json")
EVAL_METRICS = Path("metrics/eval.json")  # evaluate
SAMPLES = Path("metrics/samples.md")  # sample
SAMPLE_STATISTICS = Path("metrics/samples.json")
SAMPLE_METRICS = Path("metrics/sample.json")
