"""Helpers shared by the stage scripts: params, atomic writes, errors, logging."""
import codecs
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import charset_normalizer
import numpy as np
import pyarrow.parquet as pq
import yaml

log = logging.getLogger("tolstoy")


class StageError(Exception):
    """Bad input or params: reported as one line that names the culprit, exit status 2."""


def load_params(section, path="params.yaml"):
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    if section not in params:
        raise StageError(f"{path} has no '{section}' section")
    return params[section]


def remove(path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (file or directory); move it into place only on success.

    Readers never see a half-written output: on any error, or Ctrl-C, the temporary is removed
    and whatever was at `path` before stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        remove(stale)  # left by a killed run
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    if path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def run_stage(main):
    """Run a stage: INFO logging, SIGTERM as an exception, and a StageError becomes one `error:` line and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    # SIGTERM (kill, dvc exp queue kill) raises like Ctrl-C, so temporaries are cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        main()
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def charset_of(content_type):
    """The charset parameter of a Content-Type value, lower-cased, or None."""
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type or "", re.I)
    return match.group(1).lower() if match else None


def _looks_like_mojibake(text):
    # Cyrillic bytes decoded as latin-1/cp1252 come out as letters of the À..ÿ block.
    letters = sum(c.isalpha() for c in text[:200_000]) or 1
    return sum("\u00c0" <= c <= "\u00ff" for c in text[:200_000]) / letters > 0.01


def _charset_candidates(body, http_charset):
    yield http_charset
    meta = re.search(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", body[:4096], re.I)
    yield meta.group(1).decode("ascii").lower() if meta else None
    detected = charset_normalizer.from_bytes(body[:200_000]).best()  # slow: only when the declared ones fail
    yield detected.encoding if detected else None
    yield "utf-8"


def decode_page(body, http_charset=None):
    """Decode page bytes: HTTP charset, then <meta> charset, then detection. Returns (text, encoding).

    A charset that fails strict decoding, or that turns Cyrillic into Latin-1 mojibake, is a lie
    and the next source is tried.
    """
    for encoding in filter(None, _charset_candidates(body, http_charset)):
        try:
            text = body.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
        if not _looks_like_mojibake(text):
            return text, codecs.lookup(encoding).name
    return body.decode("utf-8", errors="replace"), "utf-8"


def iter_documents(path, columns=("id", "text")):
    """Stream rows of the documents table one at a time (memory stays flat as the corpus grows)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1, columns=list(columns)):
        yield from batch.to_pylist()


class Blocks:
    """Map-style dataset over a flat token file: item i is block i, as input_ids and labels.

    `limit` keeps that many blocks evenly spread over the file (a representative subset)."""

    def __init__(self, tokens_dir, split, limit=None):
        meta = read_json(Path(tokens_dir) / "meta.json")
        self.tokens = np.memmap(Path(tokens_dir) / f"{split}.bin", dtype=meta["dtype"], mode="r")
        self.block_size = meta["block_size"]
        n_blocks = meta[split]["blocks"]
        self.stride = max(1, n_blocks // limit) if limit else 1
        self.n = min(n_blocks, limit) if limit else n_blocks

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        start = i * self.stride * self.block_size
        ids = self.tokens[start:start + self.block_size].astype(np.int64)
        return {"input_ids": ids, "labels": ids}


# Dense bf16/fp16 tensor-core peaks from the vendors' datasheets, TFLOP/s per GPU (fp32: plain, no TF32).
GPU_PEAK_TFLOPS = {
    "H200": {"bf16": 989, "fp16": 989, "fp32": 67},
    "H100": {"bf16": 989, "fp16": 989, "fp32": 67},
    "A100": {"bf16": 312, "fp16": 312, "fp32": 19.5},
    "L40S": {"bf16": 362, "fp16": 362, "fp32": 91.6},
    "A10G": {"bf16": 70, "fp16": 70, "fp32": 31.2},
    "L4": {"bf16": 121, "fp16": 121, "fp32": 30.3},
    "RTX 4090": {"bf16": 165, "fp16": 165, "fp32": 82.6},
    "V100": {"fp16": 125, "fp32": 15.7},
    "T4": {"fp16": 65, "fp32": 8.1},
}


def peak_flops(precision):
    """Peak FLOP/s of this device for `precision`: the datasheet for a known GPU, otherwise a
    matmul probe measured on the spot (what torch reaches here, not a nominal figure)."""
    import torch  # heavy: only the stages that train or benchmark pay for it

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for model, peaks in GPU_PEAK_TFLOPS.items():
            if model in name and precision in peaks:
                return peaks[precision] * 1e12
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    n = 8192 if device == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(4):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - started))
    return best


def flops_per_token(n_params, n_layer, n_embd, context):
    """Training FLOPs per token: 6N for the weight matmuls (forward + backward) plus 12·L·d·T for attention."""
    return 6 * n_params + 12 * n_layer * n_embd * context


def peak_rss_bytes():
    """This process's own peak RSS (VmHWM). ru_maxrss would also count the parent's RSS at fork."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0
