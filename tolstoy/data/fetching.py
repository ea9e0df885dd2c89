"""Fetching: the source pages of a list into a raw directory, exactly as received, plus a manifest.

Raw bytes are stored exactly as received, with what the server said (status, content type,
ETag, Last-Modified); decoding them is the clean stage's. The HTTP session (tolstoy/data/web.py)
retries, backs off, bounds redirects, sizes and times and waits between requests to a host; several
hosts are fetched side by side, so one slow host holds up only its own pages. A rerun
sends If-None-Match / If-Modified-Since and keeps the stored bytes on 304; a rerun that fails
for a URL keeps the page stored before (its record gains the failure). Every page is written
atomically, so a killed fetch leaves no partial page and a rerun completes the set.

A mirror spec "FROM=TO [FROM=TO ...]" (the fetch stage's FETCH_MIRROR) rewrites URL prefixes before
fetching, e.g. "http://az.lib.ru/=http://127.0.0.1:8765/" for an offline mirror served over HTTP,
"http://az.lib.ru/=file:///path/to/mirror/az.lib.ru/" for one on disk, or
"http://=https://web.archive.org/web/2024/http://" for a web archive. A mirror on disk must be in
the project or ../shared, as every local source (tolstoy/data/local.py). Credentials in a URL
(http://user:password@host/, best given in FETCH_MIRROR: params.yaml and dvc.lock keep fetch.urls
as written) are sent, and left out of the manifest, the file names and the log.
"""

import datetime
import hashlib
import queue
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from tolstoy import StageError
from tolstoy.console import log, progress
from tolstoy.data.local import read_local, recorded
from tolstoy.data.sources import MANIFEST, expand_sources
from tolstoy.data.web import Fetcher, FetchFailure, web_host, without_credentials
from tolstoy.files import atomic_path, read_json, remove, write_json

HOSTS_AT_ONCE = 8  # hosts fetched side by side; each host's own pages still go one at a time


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
            return replacement + url[len(prefix) :]
    return url


def file_name(url):
    """A safe, collision-free file name: a readable slug of host+path plus a hash of the full URL."""
    try:
        parts = urlsplit(url)
        where = f"{parts.netloc}{parts.path}"
    except ValueError:  # a URL urlsplit cannot read ("http://[::1/"): fetching it fails, and says why
        where = url
    slug = re.sub(r"[^A-Za-z0-9-]+", "_", where).strip("_-")[-80:]
    return f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def is_web(source):
    return bool(re.match(r"https?://", source, re.IGNORECASE))


def as_recorded(source, project):
    """A source as the manifest and the log name it: no credentials, a local file relative to the project."""
    return without_credentials(source) if is_web(source) else recorded(source, project)


def still_stored(record, name, raw):
    """The previous manifest's record of a page whose bytes are still in `raw`, or None."""
    return record if record and record.get("file") == name and (raw / name).is_file() else None


def fetch_one(fetcher, source, stored, project):
    if is_web(source):
        return fetcher.fetch(source, stored)
    return read_local(source, fetcher.params.max_bytes, project)


def fetch_page(fetcher, url, source, stored, project, raw):
    """The manifest record of `source`, recorded as `url`; its page is written atomically into `raw`.
    A failure keeps `stored`."""
    name, recorded_source = file_name(url), as_recorded(source, project)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        record, body = fetch_one(fetcher, source, stored, project)
    except FetchFailure as failure:
        failed = {
            "error": str(failure),
            "error_source": recorded_source,
            "error_at": started,
            "attempts": getattr(failure, "attempts", 1),
        }
        kept = f" (keeping the page fetched from {stored['source']} at {stored['fetched_at']})" if stored else ""
        log.warning("fetch %s failed: %s%s", recorded_source, failure, kept)
        return {**stored, **failed} if stored else {"url": url, "source": recorded_source, "file": None, **failed}
    if body is None:  # 304 Not Modified: the stored bytes stand
        body = (raw / name).read_bytes()
    else:
        with atomic_path(raw / name) as tmp:
            tmp.write_bytes(body)
    record = {key: value for key, value in record.items() if key not in ("error_source", "error_at")}
    record.update(bytes=len(body), sha256=hashlib.sha256(body).hexdigest())
    return {**record, "url": url, "source": recorded_source, "file": name, "fetched_at": started, "error": None}


def host_of(source):
    """The queue a source waits in: its host and port, or one queue for every local file."""
    return web_host(source) if is_web(source) else ""


def fetch_host(params, pages, project, raw, finished, stopping):
    """One host's pages, one at a time (the Fetcher keeps `delay` between them); each record is
    put on `finished` as (index, record), and an error as (None, error)."""
    try:
        fetcher = Fetcher(params)
        for index, url, source, stored in pages:
            if stopping.is_set():
                return
            finished.put((index, fetch_page(fetcher, url, source, stored, project, raw)))
    except BaseException as error:
        finished.put((None, error))


def fetch_pages(params, pages, project, raw):
    """Records of `pages` ((url, source, stored) each), in order. Up to HOSTS_AT_ONCE hosts are
    fetched side by side, so a slow host holds up only its own pages."""
    by_host = {}
    for index, (url, source, stored) in enumerate(pages):
        by_host.setdefault(host_of(source), []).append((index, url, source, stored))
    finished, stopping = queue.Queue(), threading.Event()
    records = [None] * len(pages)
    with ThreadPoolExecutor(max(1, min(HOSTS_AT_ONCE, len(by_host)))) as pool:
        for host_pages in by_host.values():
            pool.submit(fetch_host, params, host_pages, project, raw, finished, stopping)
        try:
            for _ in progress(range(len(pages)), len(pages), "fetch: pages"):
                index, record = finished.get()
                if index is None:
                    raise record
                records[index] = record
        finally:
            stopping.set()  # an error or Ctrl-C here: the other hosts stop after their current page
    return records


def fetch_all(params, raw, mirror_spec="", project=Path(".")):
    """Fetch every URL of params into the directory `raw`; returns the manifest (one record per URL, in
    params order, failures with an `error`).
    Local sources are read from `project` (the working directory of the stage) and ../shared beside it.

    A failed URL whose page was stored by an earlier fetch keeps that page: its record describes
    the stored bytes (source, fetched_at, sha256) and adds the failure (error, error_source, error_at).
    """
    rules = mirror_rules(mirror_spec)
    raw = Path(raw)
    manifest_path = raw / MANIFEST
    raw.mkdir(parents=True, exist_ok=True)
    previous = {r["url"]: r for r in read_json(manifest_path)} if manifest_path.exists() else {}
    urls = expand_sources(params.urls)
    pages = []
    for url in urls:
        name = as_recorded(url, project)
        pages.append((name, apply_mirror(url, rules), still_stored(previous.get(name), file_name(name), raw)))
    manifest = fetch_pages(params, pages, project, raw)
    keep = {r["file"] for r in manifest} | {MANIFEST}
    for path in raw.iterdir():
        if path.name not in keep:
            remove(path)  # pages no longer listed in params, and temporaries of a killed run
    write_json(manifest_path, manifest)
    return manifest


def failures(manifest):
    """The failed sources of a manifest, each with its error (and whether an earlier page was kept), in one line."""
    return "; ".join(
        f"{r['error_source']} ({r['error']}{', stored page kept' if r['file'] else ''})" for r in manifest if r["error"]
    )


def check_fetched(manifest, on_error):
    """Raise a StageError when a source failed and on_error is 'fail', or when no page is stored at all."""
    if on_error == "fail" and any(r["error"] for r in manifest):
        raise StageError(f"could not fetch: {failures(manifest)}")
    if not any(r["file"] for r in manifest):
        raise StageError(f"every source failed: {failures(manifest)}")
