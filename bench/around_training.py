"""The parts of bench.performance around training: data preparation (the tokenize stage against
the tutorial's datasets.map + group_texts), the pipeline's own overhead, and generation."""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import torch
import yaml

from bench.recipes import PARAMS
from bench.workspace import ROOT, python_env, stage_command
from tolstoy.data.cleaning import DOCS_SCHEMA, document_table
from tolstoy.model.pretrained import pretrained_model, pretrained_tokenizer

PROSE = ROOT.parent / "shared/corpus/ruslit/prose"


def prep_workdir(corpus, work):
    """A work directory with the corpus as the clean stage's table (one row group per file, so the
    stage streams one document at a time), as .txt files for the tutorial, and the default tokenizer."""
    (work / "data/clean").mkdir(parents=True)
    shutil.copytree(corpus, work / "corpus")
    shutil.copytree(ROOT / "models/tokenizer", work / "models/tokenizer")
    with pq.ParquetWriter(work / "data/clean/docs.parquet", DOCS_SCHEMA) as writer:
        for f in sorted(corpus.rglob("*.txt")):
            writer.write_table(document_table(f.name, f.as_uri(), f.stem, f.read_text(encoding="utf-8")))
    (work / "params.yaml").write_text(yaml.safe_dump({"tokenize": {**PARAMS["tokenize"], "block_size": 1024}}))


def bench_prep(results):
    rows = []
    for corpus_name, corpus in [("Tolstoy", PROSE / "Tolstoy"), ("ruslit prose", PROSE)]:
        size = sum(f.stat().st_size for f in corpus.rglob("*.txt"))
        with tempfile.TemporaryDirectory() as tmp:
            prep_workdir(corpus, Path(tmp) / "w")
            for kind in ("tutorial", "ours"):
                done = subprocess.run(
                    [sys.executable, "-m", "bench.prep_worker", kind, str(Path(tmp) / "w")],
                    cwd=ROOT,
                    env=python_env(),
                    capture_output=True,
                    text=True,
                    check=True,
                )
                measured = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(
                    {
                        "corpus": corpus_name,
                        "MB": round(size / 1e6, 1),
                        "approach": kind,
                        "seconds": round(measured["seconds"], 1),
                        "peak_gib": round(measured["peak_gib"], 2),
                    }
                )
    results["prep"] = rows
    return pd.DataFrame(rows)


def timed(cmd, cwd):
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def bench_pipeline(results):
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".venv"), symlinks=True)
        params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
        noop = timed(["dvc", "repro"], repo)
        sample_alone = timed(stage_command("sample"), repo)
        params["sample"]["temperature"] = round(params["sample"]["temperature"] + 0.1, 3)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
        sample_only = timed(["dvc", "repro"], repo)
    rows = [
        {
            "what": "dvc repro, nothing changed",
            "seconds": round(noop, 2),
            "x sample stage": round(noop / sample_alone, 2),
        },
        {
            "what": "dvc repro after a sample param change",
            "seconds": round(sample_only, 2),
            "x sample stage": round(sample_only / sample_alone, 2),
        },
        {"what": "sample stage alone", "seconds": round(sample_alone, 2), "x sample stage": 1.0},
    ]
    results["pipeline"] = rows
    return pd.DataFrame(rows)


def bench_generate(results):
    tokenizer = pretrained_tokenizer(ROOT / "models/model")
    model = pretrained_model(ROOT / "models/model").eval()
    inputs = tokenizer(PARAMS["sample"]["prompts"][0], return_tensors="pt")
    rows = []
    for cache in (True, False):
        with torch.inference_mode():
            started = time.perf_counter()
            out = model.generate(
                **inputs,
                max_new_tokens=200,
                min_new_tokens=200,
                do_sample=False,
                use_cache=cache,
                pad_token_id=tokenizer.pad_token_id,
            )
            seconds = time.perf_counter() - started
        rows.append(
            {
                "kv_cache": cache,
                "new_tokens": out.shape[1] - inputs["input_ids"].shape[1],
                "tokens_per_sec": round((out.shape[1] - inputs["input_ids"].shape[1]) / seconds, 1),
            }
        )
    results["generate"] = rows
    return pd.DataFrame(rows)
