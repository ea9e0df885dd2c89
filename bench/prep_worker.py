"""One data-preparation run in a fresh process, so that its time and peak memory are its own
(imports included); used by bench.performance. Prints {"seconds", "peak_gib"} as JSON.

    python -m bench.prep_worker ours WORKDIR        # the tokenize stage on WORKDIR's data/clean and models/tokenizer
    python -m bench.prep_worker tutorial WORKDIR    # datasets text loader + map + group_texts on WORKDIR/corpus/*.txt
"""

import time

started = time.perf_counter()
import json  # noqa: E402
import os  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from tolstoy.console import peak_rss_bytes  # noqa: E402


def tutorial(work, block_size=1024):
    from datasets import load_dataset

    from tolstoy.model.pretrained import pretrained_tokenizer

    tokenizer = pretrained_tokenizer(work / "models/tokenizer")
    files = sorted(str(f) for f in (work / "corpus").rglob("*.txt"))
    dataset = load_dataset("text", data_files=files, cache_dir=str(work / "hf-cache"))["train"]
    dataset = dataset.map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"])

    def group_texts(examples):
        concatenated = {k: sum(examples[k], []) for k in examples}
        total = len(concatenated["input_ids"]) // block_size * block_size
        result = {k: [t[i : i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    dataset.map(group_texts, batched=True)


if __name__ == "__main__":
    kind, work = sys.argv[1], Path(sys.argv[2]).resolve()
    if kind == "ours":
        os.chdir(work)
        from bench.workspace import stage_command

        sys.argv = stage_command("tokenize")[2:]  # as `python -m stages.tokenize` gets them
        runpy.run_module("stages.tokenize", run_name="__main__")
    else:
        tutorial(work)
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_gib": peak_rss_bytes() / 2**30}))
