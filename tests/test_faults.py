"""Faults a real machine has, each as the README's fault table describes it: damaged checkpoints
and finished runs, a hub base's commit, duplicate sources, and unreadable inputs. On the real
`dvc` CLI in a temporary repository where the fault is in the pipeline, else the stage's own command."""

import shutil
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from bench.workspace import stage_command
from tests.helpers import damage, dvc, file_bytes, python_env, ran_stages, run, set_param

pytestmark = pytest.mark.slow  # end to end: the real dvc CLI and stage commands in subprocesses

CHECKPOINTS = "models/checkpoints"


def weights(directory):
    return load_file(directory / "models/model/model.safetensors")


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt"])
def test_a_truncated_checkpoint_is_set_aside_and_repro_resumes_from_the_one_before(reproduced_copy, name):
    directory, env = reproduced_copy
    uninterrupted = weights(directory)
    damage(directory / CHECKPOINTS / "checkpoint-8" / name)
    result = dvc(directory, "repro", env=env)
    assert ran_stages(result.stdout)[:1] == ["train"]  # evaluate and sample run only if the model differs
    output = result.stdout + result.stderr
    assert (
        f"checkpoint-8 fails verification: {name} has " in output
        and "set aside as models/checkpoints/corrupt-checkpoint-8" in output
    )
    assert "resuming from models/checkpoints/checkpoint-4" in output and "Traceback" not in output
    assert same_weights(weights(directory), uninterrupted)
    assert (directory / CHECKPOINTS / "corrupt-checkpoint-8" / name).stat().st_size > 0  # kept under its new name
    assert "up to date" in dvc(directory, "status", env=env).stdout


def test_a_damaged_final_run_trains_again(reproduced_copy):
    directory, env = reproduced_copy
    uninterrupted = weights(directory)
    damage(directory / CHECKPOINTS / "final/model/model.safetensors", "one bit flipped")
    result = dvc(directory, "repro", "-f", "-s", "train", env=env)
    output = result.stdout + result.stderr
    assert "final fails verification: model/model.safetensors is not the file that was saved" in output
    assert (
        "resuming from models/checkpoints/checkpoint-4" in output
        and "its model and cost record are restored" not in output
    )
    assert same_weights(weights(directory), uninterrupted)


def test_a_page_listed_twice_is_one_error_line_and_costs_nothing(reproduced_copy):
    directory, env = reproduced_copy
    outputs = [
        "data/raw",
        "data/clean",
        "data/tokens",
        "models",
        "metrics",
    ]  # validate's own data/params.ok is DVC's to remove
    before = file_bytes(directory, outputs)
    params = yaml.safe_load((directory / "params.yaml").read_text(encoding="utf-8"))
    set_param(directory, "fetch", "urls", params["fetch"]["urls"] + params["fetch"]["urls"][:1])
    result = run(["dvc", "repro"], directory, check=False, env=env)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert errors == [f"error: params.yaml: fetch.urls lists the same page twice: {params['fetch']['urls'][0]}"]
    assert file_bytes(directory, outputs) == before


def garble(path):
    path.write_text('{"version": "1.0", "trunc', encoding="utf-8")


@pytest.mark.parametrize(
    "module, path, spoil, culprit",
    [
        (
            "stages.clean",
            "data/raw/manifest.json",
            garble,
            "data/raw/manifest.json: cannot be read as the fetch manifest",
        ),
        (
            "stages.tokenize",
            "data/clean/docs.parquet",
            damage,
            "data/clean/docs.parquet: cannot be read as the documents table",
        ),
        (
            "stages.tokenize",
            "models/tokenizer/tokenizer.json",
            garble,
            "models/tokenizer: cannot be read as a tokenizer",
        ),
        ("stages.evaluate", "data/tokens/val.bin", damage, "data/tokens/val.bin has "),
        (
            "stages.evaluate",
            "data/tokens/meta.json",
            garble,
            "data/tokens/meta.json: cannot be read as the token files' description",
        ),
        ("stages.evaluate", "models/model/model.safetensors", damage, "models/model: cannot be read as a model"),
        (
            "stages.sample",
            "models/model/config.json",
            garble,
            "models/model: cannot be read as a model and its tokenizer",
        ),
        ("stages.train", "data/tokens/train.bin", damage, "data/tokens/train.bin has "),
        ("stages.train", "models/tokenizer/tokenizer.json", garble, "models/tokenizer: cannot be read as a tokenizer"),
        (
            "stages.train",
            "bases/pretrained/model.safetensors",
            damage,
            "bases/pretrained: cannot be read as the model of model.base='bases/pretrained'",
        ),
    ],
)
def test_an_unreadable_input_is_one_error_line_naming_it(built, tmp_path, module, path, spoil, culprit):
    directory = tmp_path / "project"
    shutil.copytree(built, directory)
    shutil.copytree(built / "models/model", directory / "bases/pretrained")
    if path.startswith("bases/"):
        set_param(directory, "model", "base", "bases/pretrained")  # built's model: its tokenizer is models/tokenizer
    spoil(directory / path)
    result = run(stage_command(module.removeprefix("stages.")), directory, check=False, env=python_env())
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith(f"error: {culprit}"), result.stderr[
        -2000:
    ]
    assert "Traceback" not in result.stderr


def hub_cache(directory, model_dir, repo_id, commit):
    """A hub cache holding `model_dir` as `repo_id` at `commit`, with `main` pointing to it (what a download leaves)."""
    repo = directory / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text(commit)
    return directory


def test_a_hub_base_is_pinned_to_the_commit_it_resolved_to(built, tmp_path):
    directory = tmp_path / "project"
    shutil.copytree(built, directory)
    commit = "0123456789abcdef0123456789abcdef01234567"
    env = dict(
        python_env(), HF_HUB_CACHE=str(hub_cache(tmp_path / "hub", built / "models/model", "tolstoy/tiny", commit))
    )
    set_param(directory, "model", "base", "tolstoy/tiny")
    set_param(directory, "train", "max_steps", 2)
    for module in ("stages.tokenizer", "stages.train"):
        run(stage_command(module.removeprefix("stages.")), directory, env=env)
    card = (directory / "models/model/README.md").read_text(encoding="utf-8")
    assert f"Fine-tuned from `tolstoy/tiny` at commit {commit}, whose model files have sha256 " in card
    fingerprint = yaml.safe_load((directory / CHECKPOINTS / "fingerprint.json").read_text())
    assert fingerprint["base"]["commit"] == commit and fingerprint["model"]["revision"] == "main"
    set_param(directory, "model", "revision", "v2")
    result = run(stage_command("train"), directory, check=False, env=env)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: model.base='tolstoy/tiny' at model.revision='v2' cannot be had: ")
    )


def test_a_truncated_token_file_is_rebuilt_by_dvc(reproduced_copy):
    directory, env = reproduced_copy
    tokens = directory / "data/tokens/train.bin"
    intact = tokens.read_bytes()
    damage(tokens)
    dvc(directory, "repro", env=env)
    assert tokens.read_bytes() == intact and "up to date" in dvc(directory, "status", env=env).stdout


def test_broken_yaml_in_params_is_dvcs_own_error_line_and_costs_nothing(reproduced_copy):
    directory, env = reproduced_copy
    before = file_bytes(directory, ["data", "models", "metrics"])
    (directory / "params.yaml").write_text("train: [unclosed\n", encoding="utf-8")
    result = run(["dvc", "repro"], directory, check=False, env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert result.returncode != 0 and len(errors) == 1 and "params.yaml" in errors[0], result.stderr
    assert file_bytes(directory, ["data", "models", "metrics"]) == before


def test_an_empty_prompt_is_a_usage_error(built):
    result = run([sys.executable, "-m", "tools.generate", ""], built, check=False)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].endswith(
        "error: give a prompt, or --interactive"
    )
