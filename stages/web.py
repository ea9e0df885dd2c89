"""One HTTP session for the fetch stage: timeouts, retries with exponential backoff and jitter
(honouring Retry-After), bounded redirects and response size, a per-host delay, and conditional
requests (If-None-Match / If-Modified-Since) for pages already stored."""
import datetime
import email.utils
import random
import time
from urllib.parse import urlsplit

import requests

from stages.common import log

TEXT_TYPES = {"text/html", "application/xhtml+xml", "text/plain"}


class FetchFailure(Exception):
    """One failed attempt; `retry` says whether another attempt may help."""

    def __init__(self, reason, retry=False, retry_after=None):
        super().__init__(reason)
        self.retry = retry
        self.retry_after = retry_after


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
                    "etag": r.headers.get("ETag"),
                    "last_modified": r.headers.get("Last-Modified"),
                }
                return record, bytes(body)
        except requests.exceptions.TooManyRedirects:
            raise FetchFailure(f"too many redirects (more than max_redirects={p['max_redirects']})") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            raise FetchFailure(f"{type(e).__name__}: {e}", retry=True) from None
