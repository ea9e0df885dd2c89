"""Shared fixtures: fixture pages, a real HTTP server on 127.0.0.1 (with injectable faults),
tiny params, and a way to run stages in a scratch project directory."""
import gzip
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests import fixtures

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("FETCH_MIRROR", None)


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from the server's root; /fault/... paths misbehave on purpose."""

    protocol_version = "HTTP/1.1"

    def __init__(self, request, client_address, server):
        super().__init__(request, client_address, server, directory=str(server.root))

    def log_message(self, *args):
        pass

    def hit(self):
        """How many times this path has been requested, this one included."""
        with self.server.lock:
            self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
            return self.server.hits[self.path]

    def send_body(self, body, content_type="text/html; charset=windows-1251", status=200, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.server.requests.append((self.path, dict(self.headers)))
        if not self.path.startswith("/fault/"):
            return super().do_GET()
        fault = self.path.split("/")[2]
        page = self.server.page
        n = self.hit()
        if fault == "flaky":  # two 503s, then the page
            return self.send_body(page) if n > 2 else self.send_error(503)
        if fault == "ratelimited":  # 429 with Retry-After, then the page
            return self.send_body(page) if n > 1 else self.send_body(b"slow down", status=429, headers=[("Retry-After", "1")])
        if fault in ("reset", "truncated"):  # headers promise the page, half of it arrives, connection drops
            if fault == "reset" and n > 1:
                return self.send_body(page)
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page[: len(page) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return None
        if fault == "stall":  # headers, then nothing for longer than the client's read timeout
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            time.sleep(3)
            self.close_connection = True
            return None
        if fault == "redirect":  # /fault/redirect/3 -> /fault/redirect/2 -> ... -> the page
            hops = int(self.path.split("/")[3])
            target = f"/fault/redirect/{hops - 1}" if hops > 1 else "/fault/ok/"
            return self.send_body(b"", status=302, headers=[("Location", target)])
        if fault == "loop":
            return self.send_body(b"", status=302, headers=[("Location", self.path)])
        if fault == "missing":
            return self.send_error(404)
        if fault == "binary":
            return self.send_body(b"\x89PNG\r\n\x1a\n" + bytes(200), content_type="image/png")
        if fault == "huge":  # no Content-Length, and it never ends
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for _ in range(10_000):
                    self.wfile.write(b"<p>" + b"x" * 65536)
            except OSError:
                pass
            return None
        if fault == "liar":  # claims UTF-8, sends windows-1251
            return self.send_body(page, content_type="text/html; charset=utf-8")
        if fault == "gzip":
            return self.send_body(gzip.compress(page), headers=[("Content-Encoding", "gzip")])
        if fault == "etag":  # supports conditional requests
            if self.headers.get("If-None-Match") == '"v1"':
                self.send_response(304)
                self.send_header("ETag", '"v1"')
                self.end_headers()
                return None
            return self.send_body(page, headers=[("ETag", '"v1"'), ("Last-Modified", "Wed, 01 Jan 2025 00:00:00 GMT")])
        if fault == "slow":  # a page dribbled out over about a second
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            for i in range(0, len(page), len(page) // 10 + 1):
                self.wfile.write(page[i:i + len(page) // 10 + 1])
                self.wfile.flush()
                time.sleep(0.1)
            return None
        if fault == "ok":
            return self.send_body(page)
        return self.send_error(400, f"unknown fault {fault}")


@pytest.fixture
def site(tmp_path):
    """Fixture pages served over HTTP on 127.0.0.1; yields (base url, server, pages)."""
    root = tmp_path / "site"
    pages = fixtures.write_site(root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SiteHandler)
    server.daemon_threads = True
    server.root, server.hits, server.requests, server.lock = root, {}, [], threading.Lock()
    server.page = (root / pages[0][0]).read_bytes()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", server, pages
    server.shutdown()
    server.server_close()


def tiny_params(urls):
    """The repository's params.yaml, shrunk so the whole pipeline runs in seconds."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["fetch"].update(urls=urls, delay=0, retries=1, backoff=0.05, backoff_max=1, connect_timeout=2, read_timeout=2)
    params["tokenizer"].update(vocab_size=400)
    params["tokenize"].update(block_size=32, span_chars=3000, val_fraction=0.1)
    params["model"].update(n_layer=1, n_head=2, n_embd=32, n_positions=64)
    # fp32: tests that compare numbers compare exact arithmetic, on every CPU (auto would pick bf16 where it is native)
    params["train"].update(max_steps=8, batch_size=4, warmup_steps=2, eval_steps=4, save_steps=4, logging_steps=2, eval_blocks=8, compile=False,
                           precision="fp32", accelerate_config=str(ROOT / "configs/accelerate/single.yaml"))
    params["evaluate"].update(max_blocks=16)
    params["sample"].update(prompts=["Пьер закашлялся и", "Наташа"], max_new_tokens=10)
    return params


def tiny_repo_params(urls):
    """tiny_params for a copy of the repository (paths inside it relative, as in params.yaml)."""
    params = tiny_params(urls)
    params["train"]["accelerate_config"] = "configs/accelerate/single.yaml"
    return params


def write_params(directory, params):
    (Path(directory) / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")


def call_stage(name):
    """Call a stage's main() in the current directory, in this process (a StageError propagates)."""
    module = __import__(f"stages.{name}", fromlist=["main"])
    module.main()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty scratch project directory, made the current directory."""
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """A scratch project on which the whole tiny pipeline has run once (from local fixture files)."""
    directory = tmp_path_factory.mktemp("built")
    pages = fixtures.write_site(directory / "site")
    urls = [(directory / "site" / path).as_uri() for path, _ in pages]
    write_params(directory, tiny_params(urls))
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        for stage in ("fetch", "clean", "tokenizer", "tokenize", "train", "evaluate", "sample"):
            call_stage(stage)
    finally:
        os.chdir(cwd)
    return directory


@pytest.fixture
def built_copy(built, tmp_path, monkeypatch):
    """A private copy of `built`, made the current directory."""
    directory = tmp_path / "copy"
    shutil.copytree(built, directory)
    monkeypatch.chdir(directory)
    return directory


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_config(directory, name, **changes):
    """A copy of configs/accelerate/<name> in `directory` on a free port (tests may run side by side), with `changes`."""
    config = yaml.safe_load((ROOT / "configs/accelerate" / name).read_text())
    config.update({"main_process_port": free_port()} if "main_process_port" in config else {}, **changes)
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(config))
    return path


def python_env():
    """Environment for subprocesses: this interpreter's bin first on PATH, offline hub."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # packages installed beside, e.g. on a GPU machine
    return env


def file_bytes(directory, roots):
    """The bytes of every file under `roots` (files or folders, relative to directory), by relative path."""
    paths = [directory / root for root in roots]
    return {str(f.relative_to(directory)): f.read_bytes() for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()}


def damage(path, how="cut short"):
    """What a full disk or a failed copy leaves: the file's first half, or one bit flipped."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "cut short" else data[:100] + bytes([data[100] ^ 1]) + data[101:])


def run(cmd, cwd, check=True, env=None):
    result = subprocess.run(cmd, cwd=cwd, env=env or python_env(), capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def make_repo(directory):
    """A fresh git repository holding the working tree's tracked and untracked, not ignored, files."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    for name in filter(None, listing.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, directory / name)
    env = git_env()
    run(["git", "init", "-q", "-b", "main"], directory, env=env)
    run(["git", "add", "-A"], directory, env=env)
    run(["git", "commit", "-q", "-m", "snapshot"], directory, env=env)


def git_env(**extra):
    return dict(python_env(), GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@localhost",
                GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@localhost", **extra)


def ran_stages(output):
    """The stages a `dvc repro` or `dvc exp run` output says it ran, in order."""
    return re.findall(r"Running stage '(\w+)'", output)


def dvc(directory, *args, env):
    return run(["dvc", *args], directory, env=env)


def set_param(directory, section, key, value):
    path = Path(directory) / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params[section][key] = value
    write_params(directory, params)


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory):
    """A git repository of this working tree (tiny params, pages from local files) after `dvc repro`,
    with its results committed; (directory, environment for git and dvc). Tests work on copies."""
    directory = tmp_path_factory.mktemp("reproduced")
    site = directory.parent / f"{directory.name}-site"
    pages = fixtures.write_site(site)
    make_repo(directory)
    write_params(directory, tiny_repo_params([(site / path).as_uri() for path, _ in pages]))
    env = git_env()
    dvc(directory, "repro", env=env)
    run(["git", "add", "-A"], directory, env=env)
    run(["git", "commit", "-q", "-m", "tiny run"], directory, env=env)
    return directory, env


def copy_of(reproduced, directory):
    """A private copy of the reproduced repository (its DVC cache included); (directory, env)."""
    shutil.copytree(reproduced[0], directory, symlinks=True)
    return directory, reproduced[1]


@pytest.fixture
def reproduced_copy(reproduced, tmp_path):
    return copy_of(reproduced, tmp_path / "repo")


@pytest.fixture
def repo(tmp_path, site):
    """A git repository holding this working tree with tiny params, fetching the fixture site
    through FETCH_MIRROR; yields (directory, environment for git and dvc)."""
    base, _, pages = site
    directory = tmp_path / "repo"
    directory.mkdir()
    make_repo(directory)
    write_params(directory, tiny_repo_params([f"http://az.lib.ru/{path}" for path, _ in pages]))
    env = git_env(FETCH_MIRROR=f"http://az.lib.ru/={base}")
    run(["git", "commit", "-q", "-am", "tiny params"], directory, env=env)
    return directory, env
