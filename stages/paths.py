"""Where every stage reads and writes (dvc.yaml declares the same paths as deps and outs)."""
from pathlib import Path

PARAMS_CHECKED = Path("data/params.ok")
RAW = Path("data/raw")
MANIFEST = RAW / "manifest.json"
DOCS = Path("data/clean/docs.parquet")
CLEAN_METRICS = Path("metrics/clean.json")
CLEAN_REPORT = Path("metrics/clean_documents.csv")
TOKENIZER = Path("models/tokenizer")
TOKENS = Path("data/tokens")
TOKENIZE_METRICS = Path("metrics/tokenize.json")
MODEL = Path("models/model")
CHECKPOINTS = Path("models/checkpoints")
TRAIN_LIVE = Path("metrics/train")
TRAIN_COST = Path("metrics/train_cost.json")
EVAL_METRICS = Path("metrics/eval.json")
SAMPLES = Path("metrics/samples.md")
