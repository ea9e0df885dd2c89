"""The tests' fixtures: a local site served over HTTP on 127.0.0.1 (with injectable faults), a
scratch project, the tiny pipeline run once, and git repositories of this working tree."""

import os
import shutil

# Test workers share the cores, and each training process runs a thread per core. OpenMP's
# waiting threads spin by default and so take the cores from the other worker's busy ones: set
# here, before torch is imported, waiting threads sleep, in this process and every one it starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# ATEN_CPU_CAPABILITY=avx2 (running the tests as on an AVX2-only CPU) sets the vector width
# torch.compile generates C++ for, but not what the C++ compiler may emit (-march=native): on an
# AVX-512 CPU its kernels then mix the two and index out of bounds. Give the compiler AVX2 too.
if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2":
    os.environ.setdefault("TORCHINDUCTOR_CPP_MARCH", "x86-64-v3")

import pytest  # noqa: E402

from bench import sites  # noqa: E402
from bench.workspace import git_env, make_repo  # noqa: E402
from tests.helpers import built_once, call_stage, copy_of, dvc, run, tiny_params, with_configs, write_params  # noqa: E402
from tests.site import serve_site  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("FETCH_MIRROR", None)


@pytest.fixture
def site(tmp_path):
    """Fixture pages served over HTTP on 127.0.0.1; yields (base url, server, pages). Their files
    are in the ../shared of `project`, where fetch may also read them as local sources."""
    with serve_site(tmp_path / "shared" / "site") as served:
        yield served


@pytest.fixture
def second_site(tmp_path):
    """The same pages from a second server (another port, so another host to the fetcher)."""
    with serve_site(tmp_path / "second-site") as served:
        yield served


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty scratch project directory, made the current directory."""
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture(scope="session")
def built(tmp_path_factory, worker_id):
    """A scratch project on which the whole tiny pipeline has run once (from local fixture files)."""
    return built_once(tmp_path_factory, worker_id, "built", build_tiny_pipeline)


def build_tiny_pipeline(directory):
    pages = sites.write_site(directory / "site")
    urls = [(directory / "site" / path).as_uri() for path, _ in pages]
    write_params(with_configs(directory), tiny_params(urls))
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        for stage in ("fetch", "clean", "tokenizer", "tokenize", "groups", "train", "evaluate", "sample"):
            call_stage(stage)
    finally:
        os.chdir(cwd)


@pytest.fixture
def built_copy(built, tmp_path, monkeypatch):
    """A private copy of `built`, made the current directory."""
    directory = tmp_path / "copy"
    shutil.copytree(built, directory)
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, worker_id):
    """A git repository of this working tree (tiny params, pages from local files) after `dvc repro`,
    with its results committed; (directory, environment for git and dvc). Tests work on copies."""
    return built_once(tmp_path_factory, worker_id, "reproduced", reproduce_tiny_repo), git_env()


def reproduce_tiny_repo(directory):
    make_repo(directory)
    pages = sites.write_site(directory / "site")  # in the repository, where fetch reads local pages (so do its copies)
    write_params(directory, tiny_params([f"site/{path}" for path, _ in pages]))
    env = git_env()
    output = dvc(directory, "repro", env=env).stdout
    (directory.parent / f"{directory.name}.repro.txt").write_text(output, encoding="utf-8")  # read by repro_output
    run(["git", "add", "-A"], directory, env=env)
    run(["git", "commit", "-q", "-m", "tiny run"], directory, env=env)


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
    write_params(directory, tiny_params([f"http://az.lib.ru/{path}" for path, _ in pages]))
    env = git_env(FETCH_MIRROR=f"http://az.lib.ru/={base}")
    run(["git", "commit", "-q", "-am", "tiny params"], directory, env=env)
    return directory, env


def pytest_xdist_auto_num_workers(config):
    """Two test workers per core (`--numprocesses=auto`): much of a test's time is spent waiting for
    the processes and servers it started, and a third and fourth worker fill those waits."""
    return 2 * (os.cpu_count() or 1)


def pytest_collection_modifyitems(items):
    """The `slow` tests first (each module's in its order). pytest-xdist (--dist=load) hands tests
    out in this order to whichever worker is free: a long test left to the end would run alone on
    one core."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
