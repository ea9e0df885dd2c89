"""Every key of params.yaml is checked for type and range before any work (stages/params.py)."""
import copy
import json
import shutil
import subprocess
import sys

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

import tools.preset
from stages.common import StageError
from stages.params import SCHEMA, check_all, read_params
from tests.helpers import ROOT, SHARED, python_env, tiny_params, write_params

# section.key: (a value of the wrong type, a value of the right type out of range)
BAD_VALUES = {
    "fetch.urls": ("http://az.lib.ru/a.shtml", ["ftp://az.lib.ru/a.shtml"]),
    "fetch.connect_timeout": ("10", 0),
    "fetch.read_timeout": ([60], -1),
    "fetch.max_seconds": (None, 0),
    "fetch.retries": (1.5, -1),
    "fetch.backoff": ("1s", -0.5),
    "fetch.backoff_max": (True, -1),
    "fetch.max_redirects": ("5", -1),
    "fetch.max_bytes": (2e7, 0),
    "fetch.delay": ("1", -1),
    "fetch.user_agent": (5, "  "),
    "fetch.on_error": (False, "retry"),
    "clean.prune_xpath": ("//form", ["//form["]),
    "clean.drop_footnote_markers": ("no", 1),
    "clean.drop_apparatus": ("yes", 0),
    "clean.dedup": ("yes", 0),
    "clean.dedup_min_chars": ("40", 0),
    "clean.min_chars": (200.0, -1),
    "tokenizer.vocab_size": ("4096", 100),
    "tokenizer.min_frequency": (2.5, 0),
    "tokenize.block_size": ("256", 1),
    "tokenize.span_chars": (None, 0),
    "tokenize.val_fraction": ("0.05", 1.5),
    "tokenize.seed": (1.0, -1),
    "model.base": (0, "not a model id"),
    "model.revision": (1, "  "),
    "model.n_layer": ("4", 0),
    "model.n_head": (4.0, 0),
    "model.n_embd": ([128], 0),
    "model.n_positions": ("256", 1),
    "model.dropout": ("0.1", 1.0),
    "train.lr": ("fast", 0),
    "train.lr_scheduler": (1, "cosine_annealing"),
    "train.warmup_steps": (5.5, -1),
    "train.max_steps": ("4600", -1),
    "train.epochs": ("1", -1),
    "train.batch_size": ("eight", 0),
    "train.grad_accum": (1.0, 0),
    "train.weight_decay": ("0.1", -0.1),
    "train.adam_beta2": ("0.99", 1.0),
    "train.max_grad_norm": ("1", -1),
    "train.seed": ("1337", -1),
    "train.precision": (16, "fp8"),
    "train.compile": ("yes", 1),
    "train.attn_implementation": (None, "flash_attention_9"),
    "train.accelerate_config": (1, "configs/accelerate/missing.yaml"),
    "train.eval_steps": ("200", 0),
    "train.eval_blocks": (32.0, 0),
    "train.logging_steps": ([50], 0),
    "train.save_steps": ("500", 0),
    "train.save_total_limit": (2.0, 0),
    "train.peer_timeout": ("300", 0),
    "train.keep": (True, "first"),
    "train.patience": (1.5, -1),
    "evaluate.batch_size": ("16", 0),
    "evaluate.max_blocks": (None, -1),
    "groups.sources": (["a.txt"], {"bad name": ["a.txt"]}),
    "groups.reference": (None, 1),
    "groups.max_blocks": ("400", -1),
    "sample.prompts": ("Наташа", []),
    "sample.max_new_tokens": ("80", 0),
    "sample.temperature": ("hot", -0.1),
    "sample.top_k": (50.5, -1),
    "sample.top_p": ("0.95", 0),
    "sample.repetition_penalty": ("1.1", 0),
    "sample.seed": ([1], -1),
}


@pytest.fixture
def valid():
    params = tiny_params(["http://az.lib.ru/a.shtml", "file:///tmp/page.html", "pages/local.txt"])
    check_all(params)
    return params


def test_the_table_covers_every_key():
    assert set(BAD_VALUES) == {f"{section}.{key}" for section, rules in SCHEMA.items() for key in rules}


def test_the_repository_params_are_valid(monkeypatch):
    monkeypatch.chdir(ROOT)
    check_all(yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")))


@pytest.mark.parametrize("kind", ["wrong type", "out of range"])
@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_every_key_is_checked(valid, name, kind):
    section, key = name.split(".")
    value = BAD_VALUES[name][kind == "out of range"]
    params = copy.deepcopy(valid)
    params[section][key] = value
    with pytest.raises(StageError) as error:
        check_all(params)
    message = str(error.value)
    assert f"{name}={value!r} must be " in message and "\n" not in message


@pytest.mark.parametrize("section", sorted(SCHEMA))
def test_missing_and_misspelt_keys_are_named(valid, section):
    key = sorted(SCHEMA[section])[0]
    params = copy.deepcopy(valid)
    params[section][key + "s"] = params[section].pop(key)
    with pytest.raises(StageError, match=rf"unknown key {section}\.{key}s \(did you mean {section}\.{key}\?\)"):
        check_all(params)
    del params[section][key + "s"]
    with pytest.raises(StageError, match=rf"{section}\.{key} is missing \("):
        check_all(params)


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(sampel=p.pop("sample")), r"unknown key sampel \(did you mean sample\?\)"),
    (lambda p: p.pop("evaluate"), "has no 'evaluate' section"),
    (lambda p: p.update(train=[1, 2]), "train must be a mapping"),
    (lambda p: p["train"].update(max_steps=0, epochs=0), "train.max_steps=0 and train.epochs=0: one must be positive"),
    (lambda p: p["train"].update(save_steps=8), r"train.keep='best' exports an evaluated checkpoint: train.save_steps=8 must equal train.eval_steps=4"),
    (lambda p: p["model"].update(n_embd=30, n_head=4), "model.n_embd=30 must be divisible by model.n_head=4"),
    (lambda p: p["tokenize"].update(block_size=128), r"tokenize.block_size=128 must be <= the model's context model.n_positions=64"),
])
def test_sections_and_rules_across_keys(valid, change, message):
    change(valid)
    with pytest.raises(StageError, match=message):
        check_all(valid)


def test_a_local_base_is_a_directory_under_bases(valid, project):
    (project / "elsewhere").mkdir()
    for base in ("elsewhere", "bases/missing"):
        valid["model"]["base"] = base
        with pytest.raises(StageError, match=rf"model.base='{base}' must be '' \(from scratch\), a model directory under bases/"):
            check_all(valid)
    (project / "bases/pretrained").mkdir(parents=True)
    valid["model"]["base"] = "bases/pretrained"
    check_all(valid)


def test_each_page_is_listed_once_and_each_pattern_matches(valid, project):
    (project / "pages").mkdir()
    (project / "pages/a.txt").write_text("a")
    for urls, message in [
        (["http://az.lib.ru/a.shtml", "pages/a.txt", "http://az.lib.ru/a.shtml"], "lists the same page twice: http://az.lib.ru/a.shtml$"),
        (["pages/*.txt", (project / "pages/a.txt").as_uri()], rf"the same page twice: pages/a.txt and {(project / 'pages/a.txt').as_uri()}"),
        (["pages/*.html"], r"fetch.urls: pages/\*.html matches no file"),
    ]:
        valid["fetch"]["urls"] = urls
        with pytest.raises(StageError, match=message):
            check_all(valid)


@pytest.mark.parametrize("module", ["stages.validate", "stages.train", "stages.sample"])
def test_a_bad_value_is_one_line_and_exit_status_2(project, module):
    params = tiny_params(["http://az.lib.ru/a.shtml"])
    params["train"]["batch_size"] = "eight"
    params["sample"]["top_p"] = 2
    write_params(project, params)
    result = subprocess.run([sys.executable, "-m", module], cwd=project, env=python_env(), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: params.yaml: ")
    assert ("sample.top_p=2" if module == "stages.sample" else "train.batch_size='eight' must be an integer >= 1") in result.stderr


@pytest.mark.parametrize("name, expected", [("train launcher", "train launcher"), (None, "-c")])
def test_a_stages_closing_line_names_it(name, expected):
    """The name a command gives (the train stage's launcher, process and worker give theirs), else the script's."""
    code = f"from stages.common import run_stage; run_stage(lambda: None, {name!r})"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=python_env(), capture_output=True, text=True, check=True)
    assert f"tolstoy {expected}: " in result.stderr and "s, peak RSS " in result.stderr


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "configs/presets").glob("*.yaml")))
def test_a_preset_through_dvcs_own_override_parser_gives_valid_params_with_its_values(preset, tmp_path, monkeypatch):
    overrides = tools.preset.overrides(ROOT / "configs/presets" / preset)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", [tools.preset.set_argument(key, value) for key, value in overrides.items()])
    params = read_params(tmp_path / "params.yaml")
    assert {key: params[key.split(".")[0]][key.split(".")[1]] for key in overrides} == overrides
    if "../shared" in json.dumps(overrides) and not SHARED.is_dir():
        pytest.skip("its sources are in ../shared, which this machine lacks")
    monkeypatch.chdir(ROOT)  # patterns and configs are relative to the repository
    check_all(params)


def test_override_values_keep_spaces_quotes_backslashes_and_cyrillic(tmp_path):
    value = {"a-b": ["x y/Алёша (1).txt", 'q"uote', 'q\\"', "c:\\dir", "end\\"], "c": ["*.txt"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"groups": {"sources": {}}, "train": {"lr": 0.1}}))
    apply_overrides(tmp_path / "params.yaml", [tools.preset.set_argument("groups.sources", value), tools.preset.set_argument("train.lr", 5e-5)])
    assert read_params(tmp_path / "params.yaml") == {"groups": {"sources": value}, "train": {"lr": 5e-5}}
