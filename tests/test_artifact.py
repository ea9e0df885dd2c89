"""The model as a DVC artifact: another directory gets it by name from a git remote of this
repository and the DVC remote, and a plain transformers pipeline loads it."""

import subprocess
import sys

import pytest

from tests.helpers import dvc, run

pytestmark = pytest.mark.slow  # end to end: the real dvc CLI in temporary git repositories


def test_another_directory_gets_the_model_by_name(reproduced_copy, tmp_path):
    directory, env = reproduced_copy
    storage = (
        directory.parent / "tolstoy-gpt-dvc-storage"
    )  # the `local` remote, ../../tolstoy-gpt-dvc-storage from .dvc/
    dvc(directory, "push", env=env)
    run(["git", "tag", "-a", "tolstoy-gpt@v0.1.0", "-m", "tolstoy-gpt v0.1.0"], directory, env=env)
    run(["git", "clone", "-q", "--bare", str(directory), str(tmp_path / "origin.git")], tmp_path, env=env)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    dvc(
        consumer,
        "artifacts",
        "get",
        str(tmp_path / "origin.git"),
        "tolstoy-gpt",
        "-o",
        "model",
        "--remote-config",
        f"url={storage}",
        env=env,
    )
    assert (consumer / "model/model.safetensors").read_bytes() == (
        directory / "models/model/model.safetensors"
    ).read_bytes()
    script = (
        "from transformers import pipeline; "
        "print(pipeline('text-generation', model='model')('Наташа')[0]['generated_text'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=consumer, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("Наташа") and len(result.stdout.strip()) > len("Наташа")
