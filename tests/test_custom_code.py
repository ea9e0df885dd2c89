"""A model directory whose config asks for code of its own (auto_map) is refused, with one error
line naming the config, before anything is loaded: nothing prompts "[y/N]", whatever standard
input holds, and the directory's code never runs."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from bench.workspace import stage_command
from tests.helpers import call_stage, python_env, tiny_params, write_params
from tolstoy import StageError

MODELING = """from pathlib import Path

Path({marker!r}).touch()  # what running the directory's code does

from transformers import GPT2Config, GPT2LMHeadModel


class MarkerConfig(GPT2Config):
    model_type = "marker-gpt2"


class MarkerModel(GPT2LMHeadModel):
    config_class = MarkerConfig
"""
AUTO_MAP = {"AutoConfig": "modeling_marker.MarkerConfig", "AutoModelForCausalLM": "modeling_marker.MarkerModel"}
REFUSED = (
    "asks to run code of its own (auto_map: AutoConfig, AutoModelForCausalLM); "
    "only transformers' own model code is used"
)


def with_custom_code(directory, tokenizer, marker):
    """A tiny GPT-2 with the tokenizer files of `tokenizer`, saved in `directory`, its config.json
    naming a model type of its own, defined in the directory's modeling_marker.py, which creates `marker`."""
    shape = GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=512, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(shape).save_pretrained(directory)
    for path in Path(tokenizer).iterdir():
        shutil.copy(path, directory)
    (directory / "modeling_marker.py").write_text(MODELING.format(marker=str(marker)), encoding="utf-8")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    config.update(model_type="marker-gpt2", auto_map=AUTO_MAP)
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


@pytest.mark.parametrize(
    "command, stdin",
    [
        (stage_command("evaluate")[1:], "y\n"),
        (stage_command("sample")[1:], "y\n"),
        (["-m", "tools.generate", "--model", "custom", "Наташа"], "y\n"),
        (
            ["-m", "tools.generate", "--model", "custom", "--interactive"],
            "y\nНаташа\n",
        ),  # a first prompt that answers "y"
    ],
    ids=["evaluate", "sample", "generate", "generate --interactive"],
)
def test_a_model_with_code_of_its_own_is_refused_before_it_is_loaded(built_copy, tmp_path, command, stdin):
    marker = tmp_path / "custom code ran"
    model = "custom" if "tools.generate" in command else "models/model"
    shutil.rmtree(model, ignore_errors=True)
    with_custom_code(Path(model), "models/tokenizer", marker)
    result = subprocess.run(
        [sys.executable, *command],
        cwd=built_copy,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env=python_env(HF_MODULES_CACHE=str(tmp_path / "modules")),
    )
    assert result.returncode == 2 and "[y/N]" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"error: {model}/config.json: {REFUSED}"]
    assert not marker.exists()


def test_a_tokenizer_with_code_of_its_own_is_refused(built, tmp_path):
    from tolstoy.model.pretrained import pretrained_tokenizer

    directory = shutil.copytree(built / "models/tokenizer", tmp_path / "tokenizer")
    config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoTokenizer": ["tokenization_marker.MarkerTokenizer", None]}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    refused = rf"^{directory}/tokenizer_config.json: asks to run code of its own \(auto_map: AutoTokenizer\)"
    with pytest.raises(StageError, match=refused):
        pretrained_tokenizer(directory)


def test_a_base_model_with_code_of_its_own_is_refused_by_the_tokenizer_stage(built, project, tmp_path):
    with_custom_code(project / "bases/custom", built / "models/tokenizer", tmp_path / "custom code ran")
    params = tiny_params([])
    params["model"]["base"] = "bases/custom"
    write_params(".", params)
    with pytest.raises(StageError, match=f"^{re.escape(f'bases/custom/config.json: {REFUSED}')}$"):
        call_stage("tokenizer")
    assert not (tmp_path / "custom code ran").exists()
