"""Copies of this checkout to run the pipeline in, apart from it (the tests' temporary repositories,
the GPU check): the environment for the project's subprocesses, a git repository of the working
tree, and params.yaml with overrides."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Folders left out where git cannot list the working tree (what .gitignore leaves out)
NOT_COPIED = (
    ".git",
    ".venv",
    ".whl",
    ".gpu_mirror",
    "data",
    "models",
    "cache",
    "tmp",
    "results",
    "__pycache__",
    "dvc_plots",
    "metrics",
)


def stage_command(stage, root=ROOT):
    """The command of a dvc.yaml stage, with this interpreter: the paths it reads and writes are dvc.yaml's."""
    stages = yaml.safe_load((Path(root) / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    command = shlex.split(stages[stage]["cmd"])
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]


def python_env(**extra):
    """Environment for subprocesses: this interpreter's bin first on PATH, offline hub, this checkout importable."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", DVC_NO_ANALYTICS="1", **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )  # packages installed beside, e.g. on a GPU machine
    return env


def git_env(**extra):
    return python_env(
        GIT_AUTHOR_NAME="workspace",
        GIT_AUTHOR_EMAIL="workspace@localhost",
        GIT_COMMITTER_NAME="workspace",
        GIT_COMMITTER_EMAIL="workspace@localhost",
        **extra,
    )


def working_tree_files():
    """The working tree's tracked and untracked, not ignored, files (relative paths); without git, all
    outside NOT_COPIED."""
    if shutil.which("git") and (ROOT / ".git").exists():
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        return [name for name in listing.stdout.decode().split("\0") if name and (ROOT / name).is_file()]
    return [
        str(f.relative_to(ROOT))
        for f in ROOT.rglob("*")
        if f.is_file() and not set(f.relative_to(ROOT).parts) & set(NOT_COPIED)
    ]


def make_repo(directory):
    """A fresh git repository of the working tree's files, committed (where git is missing, a DVC
    project without git)."""
    directory = Path(directory)
    for name in working_tree_files():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, directory / name)
    if not shutil.which("git"):  # DVC runs without git when told so
        (directory / ".dvc/config.local").write_text("[core]\n    no_scm = true\n")
        return
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "snapshot"]):
        subprocess.run(cmd, cwd=directory, env=git_env(), check=True, capture_output=True)


def shared_beside(directory, target):
    """`target` as the ../shared of the project `directory` (a link), where fetch may read local pages."""
    shared = Path(directory).parent / "shared"
    shared.symlink_to(Path(target).resolve())
    return shared


def write_params(directory, params):
    (Path(directory) / "params.yaml").write_text(
        yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )


def with_preset_values(directory, preset, values):
    """The preset file `preset` of `directory` with the values of `values` ({section: {key: value}}) for
    the keys it sets (a recipe's dvc.yaml lists exactly those keys); its other keys keep theirs."""
    path = Path(directory) / preset
    sections = yaml.safe_load(path.read_text(encoding="utf-8"))
    new = {
        name: {**keys, **{k: v for k, v in values.get(name, {}).items() if k in keys}}
        for name, keys in sections.items()
    }
    path.write_text(yaml.safe_dump(new, allow_unicode=True, sort_keys=False), encoding="utf-8")


def with_overrides(directory, *overrides):
    """params.yaml of `directory` with each {section: {key: value}} of `overrides` applied in turn."""
    params = yaml.safe_load((Path(directory) / "params.yaml").read_text(encoding="utf-8"))
    for sections in overrides:
        for section, values in sections.items():
            params[section].update(values)
    write_params(directory, params)
