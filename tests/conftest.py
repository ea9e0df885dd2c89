"""The tests' fixtures: a local site served over HTTP on 127.0.0.1 (with injectable faults), a
scratch project, the tiny pipeline run once, and git repositories of this working tree."""
import os
import shutil

import pytest

from bench import sites
from tests.helpers import call_stage, copy_of, dvc, run, tiny_params, tiny_repo_params, write_params
from tests.site import serve_site
from tools.workspace import git_env, make_repo

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("FETCH_MIRROR", None)


@pytest.fixture
def site(tmp_path):
    """Fixture pages served over HTTP on 127.0.0.1; yields (base url, server, pages)."""
    with serve_site(tmp_path / "site") as served:
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
def built(tmp_path_factory):
    """A scratch project on which the whole tiny pipeline has run once (from local fixture files)."""
    directory = tmp_path_factory.mktemp("built")
    pages = sites.write_site(directory / "site")
    urls = [(directory / "site" / path).as_uri() for path, _ in pages]
    write_params(directory, tiny_params(urls))
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        for stage in ("fetch", "clean", "tokenizer", "tokenize", "groups", "train", "evaluate", "sample"):
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


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory):
    """A git repository of this working tree (tiny params, pages from local files) after `dvc repro`,
    with its results committed; (directory, environment for git and dvc). Tests work on copies."""
    directory = tmp_path_factory.mktemp("reproduced")
    site = directory.parent / f"{directory.name}-site"
    pages = sites.write_site(site)
    make_repo(directory)
    write_params(directory, tiny_repo_params([(site / path).as_uri() for path, _ in pages]))
    env = git_env()
    dvc(directory, "repro", env=env)
    run(["git", "add", "-A"], directory, env=env)
    run(["git", "commit", "-q", "-m", "tiny run"], directory, env=env)
    return directory, env


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
