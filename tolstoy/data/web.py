"""One HTTP session for the fetch stage: timeouts, retries with exponential backoff and jitter
(honouring Retry-After), bounded redirects, response size and time (tolstoy/data/session.py), a
per-host delay, and conditional requests (If-None-Match / If-Modified-Since) for pages already
stored. Whatever goes wrong with one URL, requests' and urllib3's errors and a server's malformed
headers included, is a FetchFailure naming the cause; no URL's credentials are in its text."""

import datetime
import email.utils
import random
import re
import time

import requests
import urllib3

from tolstoy.console import log
from tolstoy.data.session import Deadline, GuardedSession

TEXT_TYPES = {"text/html", "application/xhtml+xml", "text/plain"}


# Errors that another attempt may not repeat: the connection failed, timed out or broke off.
TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
)


def without_credentials(text):
    """`text` with the user:password@ of every URL in it removed."""
    return re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s]*@", r"\1", text)


def web_host(url):
    """The host and port of an http(s) URL, as written (urlsplit refuses some URLs that requests then reports on)."""
    return re.match(r"https?://([^/?#]*)", url, re.IGNORECASE).group(1).rpartition("@")[2]


class FetchFailure(Exception):
    """One failed attempt; `retry` says whether another attempt may help."""

    def __init__(self, reason, retry=False, retry_after=None):
        super().__init__(without_credentials(reason))
        self.retry = retry
        self.retry_after = retry_after


def retry_after_seconds(value):
    """Seconds to wait as a Retry-After header says (a number, or an HTTP date, GMT when it names
    no zone); ValueError when it is neither."""
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    when = email.utils.parsedate_to_datetime(value)
    when = when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def server_failure(response):
    """An HTTP 429 or 5xx as a failure to retry, after Retry-After if the server gave a usable one."""
    reason, value = f"HTTP {response.status_code} {response.reason}", response.headers.get("Retry-After")
    try:
        return FetchFailure(reason, retry=True, retry_after=retry_after_seconds(value) if value else None)
    except ValueError:  # retried after the usual backoff
        return FetchFailure(
            f"{reason}, with a Retry-After that is neither seconds nor an HTTP date: {value!r}", retry=True
        )


def declared_length(response):
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    if not (value.strip().isascii() and value.strip().isdigit()):
        raise FetchFailure(f"Content-Length {value!r} is not a number of bytes")
    return int(value)


def check_content_type(content_type):
    media_type = content_type.split(";")[0].strip().lower()
    if media_type and media_type not in TEXT_TYPES:
        raise FetchFailure(f"content type {content_type!r} is not HTML or text")


class Fetcher:
    def __init__(self, params):
        self.params = params
        self.session = GuardedSession()
        self.session.headers["User-Agent"] = params.user_agent
        self.session.max_redirects = params.max_redirects
        self.last_request = {}  # host -> monotonic time of the last request to it

    def fetch(self, url, previous):
        """Fetch with retries. Returns (record, body); body is None when a 304 kept the stored bytes."""
        p = self.params
        for attempt in range(1, p.retries + 2):
            try:
                record, body = self._attempt(url, previous)
                return {**record, "attempts": attempt}, body
            except FetchFailure as failure:
                if not failure.retry or attempt > p.retries:
                    failure.attempts = attempt
                    raise
                wait = min(p.backoff_max, p.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                if failure.retry_after is not None:
                    wait = min(p.backoff_max, failure.retry_after)
                log.info("fetch %s: %s; retry %d in %.1fs", without_credentials(url), failure, attempt, wait)
                time.sleep(wait)

    def _wait_politely(self, host):
        elapsed = time.monotonic() - self.last_request.get(host, -1e9)
        if elapsed < self.params.delay:
            time.sleep(self.params.delay - elapsed)
        self.last_request[host] = time.monotonic()

    def _attempt(self, url, previous):
        """One request, its redirects and its body, all within max_seconds."""
        p = self.params
        headers = {}
        if previous:
            if previous.get("etag"):
                headers["If-None-Match"] = previous["etag"]
            if previous.get("last_modified"):
                headers["If-Modified-Since"] = previous["last_modified"]
        self._wait_politely(web_host(url))
        with Deadline(p.max_seconds) as deadline:
            try:
                record, body = self._exchange(url, headers, previous)
            except FetchFailure:
                if not deadline.passed.is_set():
                    raise
            if deadline.passed.is_set():  # the shut-down socket may also read as the end of the body
                raise FetchFailure(f"response cut off: still arriving after max_seconds={p.max_seconds}", retry=True)
        return record, body

    def _exchange(self, url, headers, previous):
        p = self.params
        timeout = (min(p.connect_timeout, p.max_seconds), min(p.read_timeout, p.max_seconds))
        try:
            with self.session.get(url, headers=headers, stream=True, timeout=timeout) as response:
                return self._read(response, previous)
        except requests.exceptions.TooManyRedirects:
            raise FetchFailure(f"too many redirects (more than max_redirects={p.max_redirects})") from None
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as error:
            raise FetchFailure(f"{type(error).__name__}: {error}", retry=isinstance(error, TRANSIENT)) from None

    def _read(self, response, previous):
        """The record and body of a response (body None for a 304 with `previous`)."""
        p = self.params
        if response.status_code == 304 and previous:
            return {**previous, "status": 304}, None
        if response.status_code == 429 or response.status_code >= 500:
            raise server_failure(response)
        if response.status_code >= 400:
            raise FetchFailure(f"HTTP {response.status_code} {response.reason}")
        content_type = response.headers.get("Content-Type", "")
        check_content_type(content_type)
        declared = declared_length(response)
        if declared and declared > p.max_bytes:
            raise FetchFailure(f"Content-Length {declared} is over max_bytes={p.max_bytes}")
        body = bytearray()
        for chunk in response.iter_content(1 << 16):
            body += chunk
            if len(body) > p.max_bytes:
                raise FetchFailure(f"response cut off: over max_bytes={p.max_bytes}")
        if declared and not response.headers.get("Content-Encoding") and len(body) < declared:
            raise FetchFailure(f"truncated body: {len(body)} of {declared} bytes", retry=True)
        record = {
            "final_url": without_credentials(response.url),
            "status": response.status_code,
            "content_type": content_type,
            "etag": response.headers.get("ETag"),
            "last_modified": response.headers.get("Last-Modified"),
        }
        return record, bytes(body)
