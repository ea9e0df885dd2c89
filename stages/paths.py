"""Where every stage reads and writes (dvc.yaml declares the same paths as deps and outs), by the stage that writes them."""
from pathlib import Path

PARAMS_CHECKED = Path("data/params.ok")  # validate
RAW = Path("data/raw")  # fetch
MANIFEST = RAW / "manifest.json"
DOCS, CLEAN_METRICS, CLEAN_REPORT = Path("data/clean/docs.parquet"), Path("metrics/clean.json"), Path("metrics/clean_documents.csv")
TOKENIZER = Path("models/tokenizer")
TOKENS, TOKENIZE_METRICS = Path("data/tokens"), Path("metrics/tokenize.json")
MODEL, CHECKPOINTS = Path("models/model"), Path("models/checkpoints")  # train
TRAIN_LIVE, TRAIN_COST = Path("metrics/train"), Path("metrics/train_cost.json")
EVAL_METRICS = Path("metrics/eval.json")  # evaluate
SAMPLES = Path("metrics/samples.md")  # sample
