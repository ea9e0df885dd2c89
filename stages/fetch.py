"""fetch: download the source pages listed in params into data/raw/, plus a manifest.

Raw bytes are stored exactly as received. One HTTP session with timeouts, retries with
exponential backoff and jitter (honouring Retry-After), bounded redirects and response size,
and a per-host delay. A rerun sends If-None-Match / If-Modified-Since and keeps the stored
bytes on 304. Every page is written atomically, so a killed fetch leaves no partial page and
a rerun completes the set.

FETCH_MIRROR="FROM=TO [FROM=TO ...]" rewrites URL prefixes before fetching, e.g.
FETCH_MIRROR="http://az.lib.ru/=http://127.0.0.1:8765/" for an offline mirror served over HTTP,
"http://az.lib.ru/=file:///path/to/mirror/az.lib.ru/" for one on disk, or
"http://=https://web.archive.org/web/2024/http://" for a web archive.
"""
import datetime
import email.utils
import hashlib
import os
import random
import re
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

from stages.common import StageError, atomic_path, charset_of, decode_page, load_params, log, read_json, remove, run_stage, write_json

OUT_DIR = Path("data/raw")
MANIFEST = OUT_DIR / "manifest.json"
TEXT_TYPES = {"text/html", "application/xhtml+xml", "text/plain"}
LOCAL_TYPES = {".html": "text/html", ".htm": "text/html", ".shtml": "text/html", ".txt": "text/plain"}


class FetchFailure(Exception):
    """One failed attempt; `retry` says whether another attempt may help."""

    def __init__(self, reason, retry=False, retry_after=None):
        super().__init__(reason)
        self.retry = retry
        self.retry_after = retry_after


def mirror_rules(spec):
    rules = []
    for item in spec.split():
        if "=" not in item:
            raise StageError(f"FETCH_MIRROR entry {item!r} is not of the form FROM=TO")
        rules.append(tuple(item.split("=", 1)))
    return rules


def apply_mirror(url, rules):
    for prefix, replacement in rules:
        if url.startswith(prefix):
            return replacement + url[len(prefix):]
    return url


def file_name(url):
    """A safe, collision-free file name: a readable slug of host+path plus a hash of the full URL."""
    parts = urlsplit(url)
    slug = re.sub(r"[^A-Za-z0-9-]+", "_", f"{parts.netloc}{parts.path}").strip("_-")[-80:]
    return f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def retry_after_seconds(value):
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    when = email.utils.parsedate_to_datetime(value)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def check_content_type(content_type):
    media_type = content_type.split(";")[0].strip().lower()
    if media_type and media_type not in TEXT_TYPES:
        raise FetchFailure(f"content type {content_type!r} is not HTML or text")


class Fetcher:
    def __init__(self, params):
        self.params = params
        self.session = requests.Session()
        self.session.headers["User-Agent"] = params["user_agent"]
        self.session.max_redirects = params["max_redirects"]
        self.last_request = {}  # host -> monotonic time of the last request to it

    def fetch(self, url, previous):
        """Fetch with retries. Returns (record, body); body is None when a 304 kept the stored bytes."""
        p = self.params
        for attempt in range(1, p["retries"] + 2):
            try:
                record, body = self._attempt(url, previous)
                return {**record, "attempts": attempt}, body
            except FetchFailure as failure:
                if not failure.retry or attempt > p["retries"]:
                    failure.attempts = attempt
                    raise
                wait = min(p["backoff_max"], p["backoff"] * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                if failure.retry_after is not None:
                    wait = min(p["backoff_max"], failure.retry_after)
                log.info("fetch %s: %s; retry %d in %.1fs", url, failure, attempt, wait)
                time.sleep(wait)

    def _wait_politely(self, host):
        elapsed = time.monotonic() - self.last_request.get(host, -1e9)
        if elapsed < self.params["delay"]:
            time.sleep(self.params["delay"] - elapsed)
        self.last_request[host] = time.monotonic()

    def _attempt(self, url, previous):
        p = self.params
        headers = {}
        if previous:
            if previous.get("etag"):
                headers["If-None-Match"] = previous["etag"]
            if previous.get("last_modified"):
                headers["If-Modified-Since"] = previous["last_modified"]
        self._wait_politely(urlsplit(url).netloc)
        started = time.monotonic()
        try:
            with self.session.get(url, headers=headers, stream=True, timeout=(p["connect_timeout"], p["read_timeout"])) as r:
                if r.status_code == 304 and previous:
                    return {**previous, "status": 304}, None
                if r.status_code == 429 or r.status_code >= 500:
                    raise FetchFailure(f"HTTP {r.status_code} {r.reason}", retry=True, retry_after=retry_after_seconds(r.headers.get("Retry-After")))
                if r.status_code >= 400:
                    raise FetchFailure(f"HTTP {r.status_code} {r.reason}")
                content_type = r.headers.get("Content-Type", "")
                check_content_type(content_type)
                declared = int(r.headers.get("Content-Length") or 0)
                if declared > p["max_bytes"]:
                    raise FetchFailure(f"Content-Length {declared} is over max_bytes={p['max_bytes']}")
                body = bytearray()
                for chunk in r.iter_content(1 << 16):
                    body += chunk
                    if len(body) > p["max_bytes"]:
                        raise FetchFailure(f"response cut off: over max_bytes={p['max_bytes']}")
                    if time.monotonic() - started > p["max_seconds"]:
                        raise FetchFailure(f"response cut off: still arriving after max_seconds={p['max_seconds']}", retry=True)
                if declared and not r.headers.get("Content-Encoding") and len(body) < declared:
                    raise FetchFailure(f"truncated body: {len(body)} of {declared} bytes", retry=True)
                record = {
                    "final_url": r.url,
                    "status": r.status_code,
                    "content_type": content_type,
                    "declared_encoding": charset_of(content_type),
                    "etag": r.headers.get("ETag"),
                    "last_modified": r.headers.get("Last-Modified"),
                }
                return record, bytes(body)
        except requests.exceptions.TooManyRedirects:
            raise FetchFailure(f"too many redirects (more than max_redirects={p['max_redirects']})") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            raise FetchFailure(f"{type(e).__name__}: {e}", retry=True) from None


def read_local(source, max_bytes):
    path = Path(unquote(urlsplit(source).path)) if source.startswith("file:") else Path(source)
    if not path.is_file():
        raise FetchFailure(f"no such file: {path}")
    if path.stat().st_size > max_bytes:
        raise FetchFailure(f"{path.stat().st_size} bytes is over max_bytes={max_bytes}")
    content_type = LOCAL_TYPES.get(path.suffix.lower(), "")
    if not content_type:
        raise FetchFailure(f"{path.suffix or 'no'} extension is not an HTML or text file")
    record = {"final_url": path.resolve().as_uri(), "status": 200, "content_type": content_type, "declared_encoding": None}
    return {**record, "attempts": 1}, path.read_bytes()


def fetch_all(params, mirror_spec=""):
    """Fetch every URL; returns the manifest (one record per URL, failures with an `error`)."""
    if not params["urls"]:
        raise StageError("params fetch.urls is empty: nothing to fetch")
    if params["on_error"] not in ("fail", "skip"):
        raise StageError(f"params fetch.on_error must be 'fail' or 'skip', not {params['on_error']!r}")
    rules = mirror_rules(mirror_spec)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    previous = {r["url"]: r for r in read_json(MANIFEST)} if MANIFEST.exists() else {}
    fetcher = Fetcher(params)
    manifest = []
    for url in params["urls"]:
        source = apply_mirror(url, rules)
        name = file_name(url)
        stored = previous.get(url)
        if stored and (stored.get("error") or not (OUT_DIR / name).exists()):
            stored = None  # nothing valid on disk to revalidate
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        try:
            if urlsplit(source).scheme in ("http", "https"):
                record, body = fetcher.fetch(source, stored)
            else:
                record, body = read_local(source, params["max_bytes"])
        except FetchFailure as failure:
            manifest.append({"url": url, "source": source, "error": str(failure), "attempts": getattr(failure, "attempts", 1), "fetched_at": started})
            log.warning("fetch %s failed: %s", source, failure)
            continue
        if body is not None:
            with atomic_path(OUT_DIR / name) as tmp:
                tmp.write_bytes(body)
            record.update(
                bytes=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
                detected_encoding=decode_page(body, record["declared_encoding"])[1],
            )
        manifest.append({**record, "url": url, "source": source, "file": name, "fetched_at": started, "error": None})
    keep = {r.get("file") for r in manifest} | {MANIFEST.name}
    for path in OUT_DIR.iterdir():
        if path.name not in keep:
            remove(path)  # pages no longer listed in params, and temporaries of a killed run
    write_json(MANIFEST, manifest)
    return manifest


def main():
    params = load_params("fetch")
    manifest = fetch_all(params, os.environ.get("FETCH_MIRROR", ""))
    failed = [r for r in manifest if r["error"]]
    if failed and params["on_error"] == "fail":
        raise StageError("could not fetch: " + "; ".join(f"{r['source']} ({r['error']})" for r in failed))
    ok = [r for r in manifest if not r["error"]]
    if not ok:
        raise StageError("every source failed: " + "; ".join(f"{r['source']} ({r['error']})" for r in failed))
    log.info(
        "fetch: %d pages, %d bytes, %d not modified, %d skipped after failure",
        len(ok), sum(r["bytes"] for r in ok), sum(r["status"] == 304 for r in ok), len(failed),
    )


if __name__ == "__main__":
    run_stage(main)
