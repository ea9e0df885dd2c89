"""dvc.lock never lies and nothing a user made is lost: the real `dvc` CLI in a temporary git
repository holding this working tree (tiny params, fp32)."""

import json
import shutil

import pandas as pd
import pytest
import torch
from safetensors.torch import load, load_file

from tests.helpers import dvc, file_bytes, ran_stages, run, set_param

pytestmark = pytest.mark.slow  # end to end: the real dvc CLI in temporary git repositories

OUTPUTS = ("data/params.ok", "data/raw", "data/clean", "data/tokens", "models", "metrics")


def snapshot(directory):
    """Every output file's bytes, by path."""
    return file_bytes(directory, OUTPUTS)


def model_weights(directory):
    return load_file(directory / "models/model/model.safetensors")


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)


def edit(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path} no longer contains {old!r}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_a_no_op_rerun_changes_nothing_and_edited_training_code_retrains(reproduced_copy):
    directory, env = reproduced_copy
    before = snapshot(directory)

    forced = dvc(directory, "repro", "-f", "-s", "train", env=env)
    assert ran_stages(forced.stdout) == ["train"]
    after = snapshot(directory)
    assert after.keys() == before.keys() and [k for k in before if after[k] != before[k]] == []
    assert "up to date" in dvc(directory, "status", env=env).stdout  # evaluate and sample have nothing to do

    # A real change of the training code (Adam's beta2 no longer from params): the checkpoints
    # were made by other code, so train starts fresh, and DVC re-runs what reads the model.
    edit(directory / "tolstoy/training/arguments.py", "adam_beta2=train_params.adam_beta2,", "adam_beta2=0.9,")
    rerun = dvc(directory, "repro", env=env)
    assert ran_stages(rerun.stdout) == ["train", "evaluate", "sample"]
    assert "were made with other code" in rerun.stdout + rerun.stderr
    edited = model_weights(directory)
    assert not same_weights(edited, load(before["models/model/model.safetensors"]))

    shutil.rmtree(directory / "models/checkpoints")  # the same code from scratch
    dvc(directory, "repro", "-f", "-s", "train", env=env)
    assert same_weights(model_weights(directory), edited)


BAD_PARAMS = [
    ("train", "batch_size", "eight"),
    ("train", "accelerate_config", "configs/accelerate/missing.yaml"),
    ("tokenize", "val_fraction", 1.5),
    ("tokenizer", "vocab_size", 100),
    ("evaluate", "batch_size", 0),
    ("sample", "top_p", 2),
    ("fetch", "urls", []),
    ("model", "base", "bases/../data"),  # values of the right type that no stage can run with
    ("train", "accelerate_config", "configs/accelerate/../../params.yaml"),
    ("sample", "temperature", 1e-300),
]


def test_a_bad_param_costs_no_output(reproduced_copy):
    """Each bad value in turn, on one repository: `dvc repro` fails with one error line naming it and
    every output stays; with params.yaml restored, nothing needs a rerun."""
    directory, env = reproduced_copy
    before = snapshot(directory)
    for section, key, value in BAD_PARAMS:
        set_param(directory, section, key, value)
        failed = run(["dvc", "repro"], directory, check=False, env=env)
        assert failed.returncode != 0, (section, key, value)
        errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert errors == [
            f"error: params.yaml: {section}.{key}={value!r} must be " + errors[0].split(" must be ", 1)[1]
        ], failed.stderr
        after = snapshot(directory)
        assert {k: v for k, v in after.items() if k != "data/params.ok"} == {
            k: v for k, v in before.items() if k != "data/params.ok"
        }, (section, key, value)
        run(["git", "checkout", "params.yaml"], directory, env=env)  # committed with the results
    assert set(ran_stages(dvc(directory, "repro", env=env).stdout)) <= {
        "validate"
    }  # DVC's run cache may restore it instead
    assert snapshot(directory) == before


def test_outputs_removed_by_dvc_repro_single_stage_come_back_with_the_documented_command(reproduced_copy):
    directory, env = reproduced_copy
    before = snapshot(directory)
    set_param(directory, "train", "batch_size", "eight")
    failed = run(["dvc", "repro", "-s", "train"], directory, check=False, env=env)  # -s skips validate
    assert (
        failed.returncode != 0
        and "error: params.yaml: train.batch_size='eight' must be an integer >= 1" in failed.stderr
    )
    assert not (directory / "models/model").exists()  # DVC removed it before running the stage
    run(["bash", "-c", "dvc checkout && git checkout -- metrics"], directory, env=env)  # the README's command
    assert snapshot(directory) == before


# A real change of what each stage writes, made in the stage's own code (or a module it imports).
CODE_EDITS = {
    "tolstoy/data/charset.py": (
        '            return Decoding(decoded[0], codecs.lookup(declared).name, declared, "", decoded[1])',
        '            return Decoding(decoded[0], codecs.lookup(declared).name.upper(), declared, "", decoded[1])',
    ),  # clean
    "tolstoy/data/splits.py": ('"bytes_per_token": round(', '"bytes_per_token": 2 * round('),
    "stages/evaluate.py": ('"perplexity": round(math.exp(loss), 3)', '"perplexity": round(math.exp(loss))'),
    "stages/sample.py": ('lines = ["# Samples"', 'lines = ["# Edited samples"'),
}


def test_edited_stage_code_reruns_the_stage_and_its_outputs_are_the_new_codes(reproduced_copy):
    directory, env = reproduced_copy
    tokenize_before = json.loads((directory / "metrics/tokenize.json").read_text())
    for path, (old, new) in CODE_EDITS.items():
        edit(directory / path, old, new)
    ran = ran_stages(dvc(directory, "repro", env=env).stdout)
    # fetch stores bytes; the tokenizer's and train's inputs did not change; groups runs the cleaning code too
    assert ran == ["clean", "tokenize", "groups", "evaluate", "sample"]
    assert set(pd.read_csv(directory / "metrics/clean_documents.csv")["encoding"]) == {"CP1251"}
    assert json.loads((directory / "metrics/tokenize.json").read_text())["bytes_per_token"] == pytest.approx(
        2 * tokenize_before["bytes_per_token"]
    )
    assert isinstance(json.loads((directory / "metrics/eval.json").read_text())["perplexity"], int)
    assert (directory / "metrics/samples.md").read_text(encoding="utf-8").startswith("# Edited samples")
    edited = snapshot(directory)
    forced = dvc(directory, "repro", "-f", "-s", "clean", "tokenize", "evaluate", "sample", env=env)
    assert ran_stages(forced.stdout) == ["clean", "tokenize", "evaluate", "sample"]
    assert snapshot(directory) == edited  # a fresh run of the edited code gives the same outputs
