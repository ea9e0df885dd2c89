import base64
import hashlib
import ipaddress
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from bench.workspace import stage_command
from tests.helpers import call_stage, dvc, python_env, tiny_params, write_params
from tolstoy import StageError
from tolstoy.config.params import FetchParams, section
from tolstoy.data import fetching, session
from tolstoy.files import read_json

RAW = Path("data/raw")


def fetch_values(urls, **overrides):
    """The tiny fetch section as params.yaml holds it."""
    return {**tiny_params(urls)["fetch"], **overrides}


def fetch_params(urls, **overrides):
    return section("fetch", fetch_values(urls, **overrides))


def stored_files():
    return sorted(p.name for p in RAW.iterdir() if p.name != "manifest.json")


def only(manifest):
    assert len(manifest) == 1
    return manifest[0]


def test_fetches_pages_with_a_complete_manifest(site, project):
    base, server, pages = site
    urls = [base + path for path, _ in pages]
    manifest = fetching.fetch_all(fetch_params(urls), RAW)
    assert [r["url"] for r in manifest] == urls
    for record, (path, _) in zip(manifest, pages):
        body = (RAW / record["file"]).read_bytes()
        assert body == (server.root / path).read_bytes()
        assert record["sha256"] == hashlib.sha256(body).hexdigest()
        assert record["bytes"] == len(body)
        assert record["status"] == 200 and record["error"] is None and record["attempts"] == 1
        assert record["content_type"].startswith("text/html")
        assert {"final_url", "etag", "last_modified", "fetched_at"} <= set(record)
    assert read_json(RAW / "manifest.json") == manifest
    user_agents = {headers["User-Agent"] for _, headers in server.requests}
    assert user_agents == {fetch_values([])["user_agent"]}


def test_mirror_rewrites_url_prefix(site, project):
    base, _, pages = site
    url = "http://az.lib.ru/" + pages[0][0]
    record = only(fetching.fetch_all(fetch_params([url]), RAW, mirror_spec=f"http://az.lib.ru/={base}"))
    assert record["url"] == url and record["source"] == base + pages[0][0] and record["error"] is None


def test_mirror_spec_must_be_pairs():
    with pytest.raises(StageError, match="FROM=TO"):
        fetching.mirror_rules("http://az.lib.ru/")


def test_local_files_and_file_urls_are_recorded_relative_to_the_project(site, project):
    _, server, pages = site
    path = server.root / pages[0][0]  # in ../shared
    (project / "pages").mkdir()
    (project / "pages/a.txt").write_text("Текст.", encoding="utf-8")
    same_pages_twice = [path.as_uri(), str(path), str(project / "pages/a.txt"), "pages/a.txt"]  # refused by validate
    manifest = fetching.fetch_all(fetch_params(["pages/a.txt"]).model_copy(update={"urls": same_pages_twice}), RAW)
    assert [r["error"] for r in manifest] == [None] * 4
    shared_page = f"../shared/site/{pages[0][0]}"
    recorded = [(r["url"], r["source"], r["final_url"]) for r in manifest]
    assert recorded == [(shared_page,) * 3] * 2 + [("pages/a.txt",) * 3] * 2
    assert (RAW / manifest[0]["file"]).read_bytes() == path.read_bytes()
    assert (RAW / manifest[2]["file"]).read_text(encoding="utf-8") == "Текст."
    assert str(project.parent) not in (RAW / "manifest.json").read_text(encoding="utf-8") + " ".join(stored_files())


def test_a_local_path_pattern_fetches_every_matching_file_in_order(site, project):
    _, server, pages = site
    pattern = str(server.root / "t/tolstoj/text_*.shtml")
    manifest = fetching.fetch_all(fetch_params([pattern]), RAW)
    assert [r["url"] for r in manifest] == sorted(f"../shared/site/{path}" for path, _ in pages)
    with pytest.raises(StageError, match=r"fetch.urls: .*/nothing-\*.txt matches no file"):
        fetching.fetch_all(fetch_params([str(server.root / "nothing-*.txt")]), RAW)


def test_file_names_are_safe_and_distinct():
    names = {
        fetching.file_name(u) for u in ["http://a/../../etc/passwd", "http://a/x?y=1", "http://a/x?y=2", "http://a/x/"]
    }
    assert len(names) == 4
    assert all("/" not in n and not n.startswith(".") and ".." not in n for n in names)


@pytest.mark.parametrize(
    "fault, attempts", [("flaky", 3), ("ratelimited", 2), ("reset", 2), ("redirect/3", 1), ("gzip", 1), ("liar", 1)]
)
def test_recovers(site, project, fault, attempts):
    base, server, _ = site
    record = only(fetching.fetch_all(fetch_params([f"{base}fault/{fault}"], retries=3), RAW))
    assert record["error"] is None and record["attempts"] == attempts
    assert (RAW / record["file"]).read_bytes() == server.page


def test_retry_after_is_honoured(site, project):
    base, _, _ = site
    started = time.monotonic()
    fetching.fetch_all(fetch_params([f"{base}fault/ratelimited"], backoff=0.01), RAW)
    assert time.monotonic() - started >= 1.0  # the server asked for one second


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("missing", "HTTP 404"),
        ("binary", "content type 'image/png' is not HTML or text"),
        ("loop", "too many redirects"),
        ("huge", "over max_bytes"),
        ("truncated", "ChunkedEncodingError|truncated"),
        ("stall", "ConnectionError|ReadTimeout"),
    ],
)
def test_fails_with_the_reason_and_stores_nothing(site, project, fault, reason):
    base, _, _ = site
    url = f"{base}fault/{fault}"
    params = fetch_params([url], max_bytes=1_000_000, read_timeout=1, retries=1)
    record = only(fetching.fetch_all(params, RAW))
    assert record["error"] and re.search(reason, record["error"]), record["error"]
    assert record["attempts"] == (2 if fault in ("truncated", "stall") else 1)  # only transient faults are retried
    assert stored_files() == []  # no partial page


def test_failure_policy_fail_names_each_url(site, project):
    base, _, pages = site
    urls = [base + pages[0][0], f"{base}fault/missing"]
    write_params(".", {"fetch": fetch_values(urls)})
    with pytest.raises(StageError, match=r"fault/missing \(HTTP 404"):
        call_stage("fetch")


def test_failure_policy_skip_records_and_goes_on(site, project):
    base, _, pages = site
    urls = [base + pages[0][0], f"{base}fault/missing"]
    write_params(".", {"fetch": fetch_values(urls, on_error="skip")})
    call_stage("fetch")
    manifest = read_json(RAW / "manifest.json")
    assert manifest[0]["error"] is None and "HTTP 404" in manifest[1]["error"]


def test_unreachable_host_is_named(project):
    write_params(".", {"fetch": fetch_values(["http://127.0.0.1:9/nothing.html"], retries=0)})
    with pytest.raises(StageError, match=r"127\.0\.0\.1:9/nothing\.html \(ConnectionError"):
        call_stage("fetch")


def test_conditional_refetch_keeps_stored_bytes_on_304(site, project):
    base, server, _ = site
    url = f"{base}fault/etag"
    first = only(fetching.fetch_all(fetch_params([url]), RAW))
    second = only(fetching.fetch_all(fetch_params([url]), RAW))
    assert second["status"] == 304 and second["sha256"] == first["sha256"]
    assert server.requests[-1][1].get("If-None-Match") == '"v1"'
    assert server.requests[-1][1].get("If-Modified-Since") == "Wed, 01 Jan 2025 00:00:00 GMT"
    assert (RAW / first["file"]).read_bytes() == server.page


def test_politeness_delay_between_requests_to_one_host(site, project):
    base, _, pages = site
    started = time.monotonic()
    fetching.fetch_all(fetch_params([base + p for p, _ in pages], delay=0.4), RAW)
    assert time.monotonic() - started >= 0.8  # three requests, two waits


def test_hosts_are_fetched_side_by_side_each_with_its_delay(site, second_site, project):
    slow_base, slow_server, _ = site
    fast_base, fast_server, pages = second_site
    slow = [f"{slow_base}fault/slow/{i}" for i in range(3)]  # about a second each
    fast = [fast_base + path for path, _ in pages]
    urls = [url for pair in zip(slow, fast) for url in pair]
    manifest = fetching.fetch_all(fetch_params(urls, delay=0.3), RAW)
    assert [r["url"] for r in manifest] == urls and [r["error"] for r in manifest] == [None] * 6
    slow_times = [when for _, when in slow_server.arrivals]
    fast_times = [when for _, when in fast_server.arrivals]
    assert max(fast_times) < slow_times[1]  # the fast host did not wait behind the slow one
    for times in (slow_times, fast_times):  # and each host kept its delay (seen by the server, to 50 ms)
        assert min(b - a for a, b in zip(times, times[1:])) >= 0.3 - 0.05


def test_an_error_in_a_host_thread_reaches_the_stage(site, second_site, project):
    values = fetch_values([site[0] + site[2][0][0], second_site[0] + second_site[2][0][0]])
    del values["user_agent"]
    params = FetchParams.model_construct(**values)  # params the validate stage would refuse, fed in directly
    with pytest.raises(AttributeError, match="user_agent"):
        fetching.fetch_all(params, RAW)
    assert not (RAW / "manifest.json").exists()


def test_pages_no_longer_listed_are_removed(site, project):
    base, _, pages = site
    fetching.fetch_all(fetch_params([base + p for p, _ in pages]), RAW)
    manifest = fetching.fetch_all(fetch_params([base + pages[0][0]]), RAW)
    assert stored_files() == [manifest[0]["file"]]


def test_killed_fetch_leaves_no_partial_page_and_a_rerun_completes(site, project):
    base, server, _ = site
    urls = [f"{base}fault/slow/{i}" for i in range(4)]
    write_params(".", {"fetch": fetch_values(urls)})
    process = subprocess.Popen(
        stage_command("fetch"), env=python_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while not (RAW.exists() and len(stored_files()) >= 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # well into the next page
    process.send_signal(signal.SIGKILL)
    process.wait()
    visible = [p for p in stored_files() if not p.startswith(".")]
    assert 1 <= len(visible) < 4
    assert all((RAW / name).read_bytes() == server.page for name in visible)
    assert not (RAW / "manifest.json").exists()
    call_stage("fetch")
    manifest = read_json(RAW / "manifest.json")
    assert [r["error"] for r in manifest] == [None] * 4
    assert all(r["sha256"] == hashlib.sha256(server.page).hexdigest() for r in manifest)
    assert stored_files() == sorted(r["file"] for r in manifest)  # temporaries of the killed run are gone


@pytest.mark.parametrize(
    "failing_mirror",
    ["http://127.0.0.1:9/", "{base}fault/missing/", "file:///nonexistent/mirror/"],
    ids=["server down", "404", "missing mirror directory"],
)
def test_failed_refetch_keeps_the_stored_pages(site, project, monkeypatch, failing_mirror):
    base, _, pages = site
    urls = ["http://az.lib.ru/" + path for path, _ in pages]
    write_params(".", {"fetch": fetch_values(urls, retries=0)})
    good = fetching.fetch_all(fetch_params(urls), RAW, mirror_spec=f"http://az.lib.ru/={base}")
    stored = {name: (RAW / name).read_bytes() for name in stored_files()}
    monkeypatch.setenv("FETCH_MIRROR", "http://az.lib.ru/=" + failing_mirror.format(base=base))
    with pytest.raises(StageError, match="stored page kept"):  # on_error: fail still fails the stage
        call_stage("fetch")
    assert {name: (RAW / name).read_bytes() for name in stored_files()} == stored
    manifest = read_json(RAW / "manifest.json")
    for before, after in zip(good, manifest):
        assert after["error"] and after["error_source"].startswith(failing_mirror.format(base=base)[:20])
        assert {k: after[k] for k in ("file", "source", "fetched_at", "sha256", "bytes")} == {
            k: before[k] for k in ("file", "source", "fetched_at", "sha256", "bytes")
        }
    write_params(".", {"fetch": fetch_values(urls, retries=0, on_error="skip")})
    call_stage("fetch")  # skip: goes on with the stored pages
    assert {name: (RAW / name).read_bytes() for name in stored_files()} == stored
    monkeypatch.setenv("FETCH_MIRROR", f"http://az.lib.ru/={base}")
    call_stage("fetch")
    assert [r["error"] for r in read_json(RAW / "manifest.json")] == [None] * len(urls)


def test_fetch_records_what_the_server_said_and_leaves_decoding_to_clean(site, project):
    base, _, _ = site
    url = f"{base}fault/etag"
    first = only(fetching.fetch_all(fetch_params([url]), RAW))
    second = only(fetching.fetch_all(fetch_params([url]), RAW))
    assert second["status"] == 304 and (second["sha256"], second["content_type"]) == (
        first["sha256"],
        first["content_type"],
    )
    assert not {"declared_encoding", "detected_encoding", "encoding_note"} & (set(first) | set(second))


# Hostile or broken input: servers, local paths, credentials and params
def run_fetch(**env):
    """The fetch stage run as dvc runs it: (exit status, what it printed on stdout and stderr)."""
    result = subprocess.run(stage_command("fetch"), env=python_env(**env), capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def error_lines(output):
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("fault", ["drip", "drip-headers"])
def test_a_server_sending_a_byte_at_a_time_is_cut_off_at_max_seconds(site, project, fault):
    base, _, _ = site
    started = time.monotonic()
    record = only(
        fetching.fetch_all(fetch_params([f"{base}fault/{fault}"], max_seconds=1, read_timeout=2, retries=0), RAW)
    )
    assert time.monotonic() - started < 1 + 1.0  # max_seconds plus a margin; the server takes 10 s
    assert record["error"] == "response cut off: still arriving after max_seconds=1" and stored_files() == []


def test_a_server_sending_a_byte_at_a_time_through_a_proxy_is_cut_off_at_max_seconds(site, project, monkeypatch):
    base, server, _ = site
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", base)  # the site's server, serving its own pages as the proxy
    started = time.monotonic()
    record = only(
        fetching.fetch_all(fetch_params(["http://az.lib.ru/fault/drip"], max_seconds=1, read_timeout=2, retries=0), RAW)
    )
    assert time.monotonic() - started < 1 + 1.0  # max_seconds plus a margin; the server takes 10 s
    assert record["error"] == "response cut off: still arriving after max_seconds=1"
    assert server.requests[-1][0] == "http://az.lib.ru/fault/drip"  # asked as a proxy


def test_a_redirect_is_followed_without_reading_its_body(site, project):
    base, server, _ = site
    started = time.monotonic()
    record = only(fetching.fetch_all(fetch_params([f"{base}fault/goto-dripping"], max_seconds=3), RAW))
    assert time.monotonic() - started < 3  # within max_seconds; the redirect's body takes 10 s
    assert record["error"] is None and record["final_url"] == f"{base}fault/ok/"
    assert (RAW / record["file"]).read_bytes() == server.page


MALFORMED = {  # /fault/... path: what the error says
    "retry-after/soon": (
        "HTTP 503 Service Unavailable, with a Retry-After that is neither seconds nor an HTTP date: 'soon'"
    ),
    "retry-after/" + quote("Wed, 01 Jan 2025 00:00:00"):  # no zone: GMT, as HTTP dates are
    "HTTP 503 Service Unavailable",
    "length/abc": "Content-Length 'abc' is not a number of bytes",
    "goto/"
    + quote(
        "ftp://127.0.0.1/page.html", safe=""
    ): "RedirectRefused: redirect to ftp://127.0.0.1/page.html: only http and https are followed",
    "goto/"
    + quote(
        "file:///etc/passwd", safe=""
    ): "RedirectRefused: redirect to file:///etc/passwd: only http and https are followed",
}


@pytest.mark.parametrize(
    "fault", MALFORMED, ids=["retry-after garbage", "retry-after without zone", "content-length", "to ftp", "to file"]
)
def test_a_malformed_or_misdirecting_response_fails_its_url_in_one_line(site, project, fault):
    base, _, pages = site
    url = f"{base}fault/{fault}"
    write_params(".", {"fetch": fetch_values([base + pages[0][0], url])})
    status, output = run_fetch()
    assert status == 2 and error_lines(output) == [f"error: could not fetch: {url} ({MALFORMED[fault]})"]
    manifest = read_json(RAW / "manifest.json")
    assert manifest[0]["error"] is None and manifest[1]["error"] == MALFORMED[fault] and manifest[1]["file"] is None


def test_malformed_and_misdirecting_responses_are_skipped_and_counted(site, project):
    base, _, pages = site
    urls = [base + pages[0][0]] + [f"{base}fault/{fault}" for fault in MALFORMED]
    write_params(".", {"fetch": fetch_values(urls, on_error="skip")})
    status, output = run_fetch()
    manifest = read_json(RAW / "manifest.json")
    assert status == 0 and error_lines(output) == []
    assert [r["error"] for r in manifest] == [None, *MALFORMED.values()] and stored_files() == [manifest[0]["file"]]
    assert f"fetch: 1 pages, {manifest[0]['bytes']} bytes, 0 not modified, {len(MALFORMED)} failed" in output


@pytest.mark.parametrize(
    "source, target, inward",
    [
        ("93.184.216.34", "10.0.0.1", "10.0.0.1"),  # public to private
        ("93.184.216.34", "127.0.0.1", "127.0.0.1"),  # to loopback
        ("93.184.216.34", "169.254.169.254", "169.254.169.254"),  # to link-local (a cloud's metadata service)
        ("93.184.216.34", "::ffff:127.0.0.1", "127.0.0.1"),  # loopback, written as IPv6
        ("2606:4700::6810:84e5", "fe80::1", "fe80::1"),
        ("93.184.216.34", "1.1.1.1", None),  # public to public
        ("127.0.0.1", "127.0.0.2", None),  # within loopback
        ("10.0.0.1", "127.0.0.1", None),  # from a private network
        ("10.0.0.1", "93.184.216.34", None),
    ],
)
def test_a_redirect_from_a_public_address_may_not_lead_inward(source, target, inward):
    found = session.inward_address(session.addresses(source), session.addresses(target))
    assert found == (inward and ipaddress.ip_address(inward))


def test_a_redirect_within_loopback_is_followed(site, project):
    base, server, _ = site
    other_name = base.replace("127.0.0.1", "localhost")
    record = only(
        fetching.fetch_all(fetch_params([f"{base}fault/goto/" + quote(f"{other_name}fault/ok/", safe="")]), RAW)
    )
    assert record["error"] is None and record["final_url"] == f"{other_name}fault/ok/"
    assert (RAW / record["file"]).read_bytes() == server.page


LOCAL_REFUSALS = {  # a local source: what the error says about it
    "symlink to /proc": r"it is /proc/\d+/environ, under /proc, /sys or /dev: not read",
    "symlink to /dev": r"it is /dev/zero, under /proc, /sys or /dev: not read",
    "symlink to outside": r"it is /.*/elsewhere/page.html, outside the project and \.\./shared: not read",
    "path outside": r"outside the project and \.\./shared: not read",
    "pattern reaching outside": r"outside the project and \.\./shared: not read",
    "fifo": r"not a regular file",
}


def refused_source(project, case):
    """The fetch.urls entry of a LOCAL_REFUSALS case, made in and beside the project."""
    outside = project.parent / "elsewhere/page.html"
    outside.parent.mkdir()
    outside.write_text("<p>Not for the corpus.</p>", encoding="utf-8")
    (project / "pages").mkdir()
    links = {
        "symlink to /proc": ("env.txt", "/proc/self/environ"),
        "symlink to /dev": ("zero.html", "/dev/zero"),
        "symlink to outside": ("page.html", outside),
    }
    if case in links:
        (project / "pages" / links[case][0]).symlink_to(links[case][1])
        return f"pages/{links[case][0]}"
    if case == "fifo":
        os.mkfifo(project / "pages/pipe.html")
        return "pages/pipe.html"
    return str(outside.parent / "*.html") if case == "pattern reaching outside" else str(outside)


@pytest.mark.parametrize("case", LOCAL_REFUSALS)
def test_a_local_source_that_is_not_a_regular_file_of_the_project_is_refused(project, case):
    source = refused_source(project, case)
    write_params(".", {"fetch": fetch_values([source])})
    status, output = run_fetch()
    named = re.escape(source.replace("*", "page"))  # a pattern: the file it matched
    assert status == 2 and len(error_lines(output)) == 1
    assert re.fullmatch(rf"error: could not fetch: {named} \({LOCAL_REFUSALS[case]}\)", error_lines(output)[0])
    assert stored_files() == []


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://[::1/", "InvalidURL: Failed to parse: '[::1' is not a valid host or port"),
        ("http://127.0.0.1:99999/", "InvalidURL: Failed to parse: http://127.0.0.1:99999/"),
        ("file://[::1/page.html", "no such file: file:/[::1/page.html"),  # not a URL: a path in the project
    ],
)
def test_a_url_that_cannot_be_read_is_a_failure_of_its_own(project, url, reason):
    assert only(fetching.fetch_all(fetch_params([url]), RAW))["error"] == reason


def test_a_local_file_is_read_only_up_to_max_bytes(project):
    Path("big.txt").write_bytes(b"x" * 1001)
    Path("small.txt").write_bytes(b"x" * 1000)
    manifest = fetching.fetch_all(fetch_params(["big.txt", "small.txt"], max_bytes=1000), RAW)
    assert [r["error"] for r in manifest] == ["big.txt is over max_bytes=1000", None]


SECRET = "s3cret-pw"


def test_credentials_in_a_url_are_sent_and_recorded_nowhere(site, project, caplog, capsys):
    base, server, pages = site
    with_credentials = base.replace("//", f"//reader:{SECRET}@")
    paths = [pages[0][0], "fault/missing", "fault/redirect/2"]  # the redirects' URLs keep the credentials
    manifest = fetching.fetch_all(fetch_params([with_credentials + path for path in paths], retries=0), RAW)
    assert [r["url"] for r in manifest] == [r["source"] for r in manifest] == [base + path for path in paths]
    assert [bool(r["error"]) for r in manifest] == [False, True, False]
    assert manifest[2]["final_url"] == f"{base}fault/ok/"
    token = base64.b64encode(f"reader:{SECRET}".encode()).decode()
    assert {headers.get("Authorization") for _, headers in server.requests} == {f"Basic {token}"}
    recorded = (RAW / "manifest.json").read_text(encoding="utf-8") + " ".join(stored_files())
    recorded += caplog.text + "".join(capsys.readouterr())
    assert SECRET not in recorded and token not in recorded and "reader" not in recorded


def test_credentials_in_fetch_mirror_are_recorded_nowhere(site, project):
    base, server, pages = site
    urls = ["http://az.lib.ru/" + pages[0][0], "http://az.lib.ru/fault/missing"]
    write_params(".", {"fetch": fetch_values(urls, retries=0)})
    status, output = run_fetch(FETCH_MIRROR=f"http://az.lib.ru/={base.replace('//', f'//reader:{SECRET}@')}")
    assert status == 2 and error_lines(output) == [f"error: could not fetch: {base}fault/missing (HTTP 404 Not Found)"]
    assert SECRET not in output + (RAW / "manifest.json").read_text(encoding="utf-8") + " ".join(stored_files())
    assert all(headers.get("Authorization") for _, headers in server.requests)


@pytest.mark.slow
def test_dvc_lock_records_no_credentials_from_fetch_mirror(repo, site):
    directory, env = repo
    base = site[0]
    mirror = f"http://az.lib.ru/={base.replace('//', f'//reader:{SECRET}@')}"
    dvc(directory, "repro", "fetch", env={**env, "FETCH_MIRROR": mirror})
    assert read_json(directory / "data/raw/manifest.json")[0]["error"] is None
    recorded = [directory / "dvc.lock", *(directory / ".dvc/cache").rglob("*"), *(directory / "data/raw").rglob("*")]
    assert [p for p in recorded if SECRET in str(p) or (p.is_file() and SECRET.encode() in p.read_bytes())] == []


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        (
            "user_agent",
            "tolstoy-gpt\r\nX-Injected: 1",
            r"a non-empty string of printable ASCII characters \(no line break\)",
        ),
        ("read_timeout", 1e300, "a number > 0 and <= 86400"),
        ("max_seconds", 1e10, "a number > 0 and <= 86400"),
    ],
)
def test_params_refuse_a_header_with_a_line_break_and_an_absurd_time(project, key, value, allowed):
    write_params(".", {"fetch": fetch_values(["pages/a.txt"], **{key: value})})
    status, output = run_fetch()
    assert status == 2 and len(error_lines(output)) == 1
    assert re.fullmatch(rf"error: params.yaml: fetch.{key}=.* must be {allowed}", error_lines(output)[0])
