"""fetch: download the source pages listed in params into data/raw/, plus a manifest.

Raw bytes are stored exactly as received. One HTTP session with timeouts, retries with
exponential backoff and jitter (honouring Retry-After), bounded redirects and response size,
and a per-host delay. A rerun sends If-None-Match / If-Modified-Since and keeps the stored
bytes on 304; a rerun that fails for a URL keeps the page stored before (its record gains the
failure). Every page is written atomically, so a killed fetch leaves no partial page and a
rerun completes the set.

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

from stages.charset import charset_of, decode_page
from stages.common import StageError, atomic_path, log, read_json, remove, run_stage, write_json
from stages.params import load_params
from stages.sources import expand_sources
from stages.paths import MANIFEST, RAW

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


def still_stored(record, name):
    """The previous manifest's record of a page whose bytes are still on disk, or None."""
    return record if record and record.get("file") == name and (RAW / name).is_file() else None


def fetch_one(fetcher, source, stored, max_bytes):
    if urlsplit(source).scheme in ("http", "https"):
        return fetcher.fetch(source, stored)
    return read_local(source, max_bytes)


def encoding_fields(body, declared, url):
    try:
        page = decode_page(body, declared, url)
    except StageError as ambiguous:  # the clean stage stops on it; the bytes are still worth keeping
        return {"detected_encoding": None, "encoding_note": str(ambiguous)}
    return {"detected_encoding": page.encoding, "encoding_note": page.note}


def fetch_all(params, mirror_spec=""):
    """Fetch every URL; returns the manifest (one record per URL, failures with an `error`).

    A failed URL whose page was stored by an earlier fetch keeps that page: its record describes
    the stored bytes (source, fetched_at, sha256) and adds the failure (error, error_source, error_at).
    """
    rules = mirror_rules(mirror_spec)
    RAW.mkdir(parents=True, exist_ok=True)
    previous = {r["url"]: r for r in read_json(MANIFEST)} if MANIFEST.exists() else {}
    fetcher = Fetcher(params)
    manifest = []
    for url in expand_sources(params["urls"]):
        source, name = apply_mirror(url, rules), file_name(url)
        stored = still_stored(previous.get(url), name)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        try:
            record, body = fetch_one(fetcher, source, stored, params["max_bytes"])
        except FetchFailure as failure:
            failed = {"error": str(failure), "error_source": source, "error_at": started, "attempts": getattr(failure, "attempts", 1)}
            manifest.append({**stored, **failed} if stored else {"url": url, "source": source, "file": None, **failed})
            log.warning("fetch %s failed: %s%s", source, failure, f" (keeping the page fetched from {stored['source']} at {stored['fetched_at']})" if stored else "")
            continue
        if body is None:  # 304 Not Modified: the stored bytes stand
            body = (RAW / name).read_bytes()
        else:
            with atomic_path(RAW / name) as tmp:
                tmp.write_bytes(body)
        record = {key: value for key, value in record.items() if key not in ("error_source", "error_at")}
        record.update(bytes=len(body), sha256=hashlib.sha256(body).hexdigest(), **encoding_fields(body, record["declared_encoding"], url))
        manifest.append({**record, "url": url, "source": source, "file": name, "fetched_at": started, "error": None})
    keep = {r["file"] for r in manifest} | {MANIFEST.name}
    for path in RAW.iterdir():
        if path.name not in keep:
            remove(path)  # pages no longer listed in params, and temporaries of a killed run
    write_json(MANIFEST, manifest)
    return manifest


def main():
    params = load_params("fetch")
    manifest = fetch_all(params, os.environ.get("FETCH_MIRROR", ""))
    failed = [r for r in manifest if r["error"]]
    failures = "; ".join(f"{r['error_source']} ({r['error']}{', stored page kept' if r['file'] else ''})" for r in failed)
    if failed and params["on_error"] == "fail":
        raise StageError(f"could not fetch: {failures}")
    stored = [r for r in manifest if r["file"]]
    if not stored:
        raise StageError(f"every source failed: {failures}")
    log.info(
        "fetch: %d pages, %d bytes, %d not modified, %d failed (%d of them kept from an earlier fetch)",
        len(stored), sum(r["bytes"] for r in stored), sum(r.get("status") == 304 for r in stored if not r["error"]), len(failed),
        sum(bool(r["file"]) for r in failed),
    )


if __name__ == "__main__":
    run_stage(main)
