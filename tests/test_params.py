"""Every key of params.yaml is checked for type and range before any work (tolstoy/config/params.py)."""

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import apply_overrides

import tools.preset
from bench.workspace import stage_command
from tests.helpers import (
    ROOT,
    SHARED,
    accelerate_config,
    file_bytes,
    python_env,
    tiny_params,
    with_configs,
    write_params,
)
from tolstoy import StageError
from tolstoy.config.accelerate import accelerate_config_problem
from tolstoy.config.params import SECTIONS, check_all, read_params

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
    assert set(BAD_VALUES) == {f"{section}.{key}" for section, model in SECTIONS.items() for key in model.model_fields}


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


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_missing_and_misspelt_keys_are_named(valid, section):
    key = sorted(SECTIONS[section].model_fields)[0]
    params = copy.deepcopy(valid)
    params[section][key + "s"] = params[section].pop(key)
    with pytest.raises(StageError, match=rf"unknown key {section}\.{key}s \(did you mean {section}\.{key}\?\)"):
        check_all(params)
    del params[section][key + "s"]
    with pytest.raises(StageError, match=rf"{section}\.{key} is missing \("):
        check_all(params)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.update(sampel=p.pop("sample")), r"unknown key sampel \(did you mean sample\?\)"),
        (lambda p: p.pop("evaluate"), "has no 'evaluate' section"),
        (lambda p: p.update(train=[1, 2]), "train must be a mapping"),
        (
            lambda p: p["train"].update(max_steps=0, epochs=0),
            "train.max_steps=0 and train.epochs=0: one must be positive",
        ),
        (
            lambda p: p["train"].update(save_steps=8),
            r"train.keep='best' exports an evaluated checkpoint: train.save_steps=8 must equal train.eval_steps=4",
        ),
        (lambda p: p["model"].update(n_embd=30, n_head=4), "model.n_embd=30 must be divisible by model.n_head=4"),
        (
            lambda p: p["tokenize"].update(block_size=128),
            r"tokenize.block_size=128 must be <= the model's context model.n_positions=64",
        ),
    ],
)
def test_sections_and_rules_across_keys(valid, change, message):
    change(valid)
    with pytest.raises(StageError, match=message):
        check_all(valid)


@pytest.fixture
def configs(valid, project):
    """`valid` params in a scratch project that holds the accelerate configs."""
    with_configs(project)
    return valid


def test_a_local_base_is_a_directory_under_bases(configs, project):
    (project / "elsewhere").mkdir()
    (project / "bases").mkdir()
    (project / "bases/link").symlink_to(project / "elsewhere")
    for base in (
        "elsewhere",
        "bases/missing",
        "bases",
        "bases/../elsewhere",
        "bases/link",
        "bases/../../project/elsewhere",
        "../outside/model",
        "owner/../name",
    ):  # the last two: neither a local path under bases/ nor a hub id
        configs["model"]["base"] = base
        with pytest.raises(StageError) as error:
            check_all(configs)
        assert str(error.value).startswith(
            f"params.yaml: model.base={base!r} must be '' (from scratch), a model directory under bases/"
        )
    for base in ("bases/pretrained", "bases/../bases/pretrained", "owner/name"):
        (project / "bases/pretrained").mkdir(exist_ok=True)
        configs["model"]["base"] = base
        check_all(configs)


# Values of the right type that a stage cannot run with: each is refused before any work.
UNRUNNABLE = [
    ("train.batch_size", 4097),
    ("train.batch_size", 10**12),  # the plan looks for a micro-batch among its divisors
    ("train.grad_accum", 10**9),
    ("evaluate.batch_size", 10**9),
    ("train.seed", 2**32),
    ("tokenize.seed", 2**64),
    ("sample.seed", 2**32),  # numpy's seeds are 32-bit
    ("train.peer_timeout", 1e300),
    ("train.peer_timeout", 0.4),  # whole seconds to torch: overflow, or 0
    ("train.weight_decay", 1e9),
    ("sample.temperature", 1e-300),
    ("sample.temperature", 1e300),  # logits / temperature: inf, or all alike
    ("sample.repetition_penalty", 1e-300),
    ("sample.repetition_penalty", 1e300),
    ("train.accelerate_config", "/etc/hostname"),
    ("train.accelerate_config", "configs/accelerate/../../params.yaml"),
    ("train.accelerate_config", "configs/accelerate"),
]


@pytest.mark.parametrize("name, value", UNRUNNABLE)
def test_values_no_stage_can_run_with_are_refused(configs, name, value):
    section, key = name.split(".")
    configs[section][key] = value
    with pytest.raises(StageError) as error:
        check_all(configs)
    assert str(error.value).startswith(f"params.yaml: {name}={value!r} must be ") and "\n" not in str(error.value)


def test_the_bounds_are_values_the_stages_run_with(configs):
    """The other side of each bound is allowed (sample runs at both: tests/test_sample.py)."""
    for name, value in [
        ("train.batch_size", 4096),
        ("train.seed", 2**32 - 1),
        ("train.peer_timeout", 1),
        ("sample.temperature", 0),
        ("sample.temperature", 1e-3),
        ("sample.repetition_penalty", 100),
    ]:
        section, key = name.split(".")
        check_all({**configs, section: {**configs[section], key: value}})


CONFIG = "an accelerate config file under configs/accelerate/ that the launcher can run"


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"num_processes": 0}, "num_processes=0 must be an integer >= 1 and <= 65536"),
        ({"num_processes": "2"}, "num_processes='2' must be an integer"),
        ({"num_machines": 2, "num_processes": 3}, "num_processes=3 must be a multiple of num_machines=2"),
        ({"machine_rank": 1}, "machine_rank=1 must be < num_machines=1"),
        ({"machine_rank": -1}, "machine_rank=-1 must be an integer >= 0"),
        ({"num_machines": 2, "main_process_ip": None}, "main_process_ip must be rank 0's address (num_machines=2)"),
        ({"distributed_type": "DEEPSPEED"}, "distributed_type='DEEPSPEED' must be one of 'NO', 'MULTI_GPU'"),
        ({"distributed_type": False}, "distributed_type=False must be one of 'NO', 'MULTI_GPU'"),  # NO unquoted in YAML
        ({"distributed_type": "NO"}, "num_processes=2 needs distributed_type 'MULTI_GPU' ('NO' runs one process)"),
        ({"distributed_type": None}, "distributed_type must be set"),
        ({"use_cpu": "yes"}, "use_cpu='yes' must be one of True, False"),
        ({"mixed_precision": "fp8"}, "mixed_precision='fp8' must be 'no' (the precision is train.precision)"),
        ({"main_process_port": 70000}, "main_process_port=70000 must be an integer >= 1 and <= 65535"),
        ({"gpu_ids": 0}, "gpu_ids=0 must be 'all' or GPU numbers separated by commas, quoted"),
        (
            {"dynamo_config": {"dynamo_backend": "INDUCTOR"}},
            "dynamo_config must be empty (training is DDP; compile is train.compile)",
        ),
        (
            {"num_processess": 2},
            "unknown key 'num_processess' (the launcher reads compute_environment, distributed_type, ",
        ),
    ],
)
def test_an_accelerate_config_the_launcher_cannot_run_is_refused(configs, changes, problem):
    path = accelerate_config(".", "cpu-ddp.yaml", "hostile.yaml", **changes)
    configs["train"]["accelerate_config"] = path
    with pytest.raises(StageError) as error:
        check_all(configs)
    assert str(error.value).startswith(f"params.yaml: train.accelerate_config={path!r} must be {CONFIG} ({problem}")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("- a list\n", "is not a mapping of keys to values"),
        ("num_processes: [1\n", "cannot be read (ParserError)"),
        (b"\xff\xfe", "cannot be read (UnicodeDecodeError)"),
    ],
)
def test_an_accelerate_config_that_is_not_one_is_refused(configs, text, problem):
    path = Path("configs/accelerate/broken.yaml")
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    configs["train"]["accelerate_config"] = str(path)
    with pytest.raises(StageError, match=re.escape(f"must be {CONFIG} ({problem})")):
        check_all(configs)


def test_the_configs_shipped_and_one_accelerate_writes_are_runnable(tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig

    for path in (ROOT / "configs/accelerate").glob("*.yaml"):
        assert accelerate_config_problem(path) is None, path
    written = ClusterConfig(
        compute_environment="LOCAL_MACHINE",
        distributed_type="MULTI_GPU",
        mixed_precision="no",
        use_cpu=True,
        debug=False,
        num_processes=2,
    )  # as `accelerate config` answers for two CPU processes
    written.to_yaml_file(str(tmp_path / "written.yaml"))
    assert accelerate_config_problem(tmp_path / "written.yaml") is None


def test_each_page_is_listed_once_and_each_pattern_matches(valid, project):
    (project / "pages").mkdir()
    (project / "pages/a.txt").write_text("a")
    for urls, message in [
        (
            ["http://az.lib.ru/a.shtml", "pages/a.txt", "http://az.lib.ru/a.shtml"],
            "lists the same page twice: http://az.lib.ru/a.shtml$",
        ),
        (
            ["pages/*.txt", (project / "pages/a.txt").as_uri()],
            rf"the same page twice: pages/a.txt and {(project / 'pages/a.txt').as_uri()}",
        ),
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
    result = subprocess.run(
        stage_command(module.removeprefix("stages.")), cwd=project, env=python_env(), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: params.yaml: ")
    assert (
        "sample.top_p=2" if module == "stages.sample" else "train.batch_size='eight' must be an integer >= 1"
    ) in result.stderr


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("model", "base", "bases/../data"),
        ("train", "accelerate_config", "configs/accelerate/hostile.yaml"),
        ("train", "batch_size", 10**12),
        ("sample", "temperature", 1e-300),
        ("sample", "repetition_penalty", 1e-300),
    ],
)
def test_validate_stops_a_hostile_value_with_one_line_and_changes_nothing(project, section, key, value):
    """validate runs before every other stage (dvc.yaml), so its refusal is the only thing that happens
    (tests/test_reproducibility.py: through `dvc repro`)."""
    accelerate_config(with_configs(project), "cpu-ddp.yaml", "hostile.yaml", num_processes=0)
    (project / "data").mkdir()
    (project / "data/params.ok").write_text("params.yaml is valid\n")
    params = tiny_params(["http://az.lib.ru/a.shtml"])
    params[section][key] = value
    write_params(project, params)
    before = file_bytes(project, ["."])
    result = subprocess.run(stage_command("validate"), cwd=project, env=python_env(), capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith(f"error: params.yaml: {section}.{key}={value!r} must be ")
    assert file_bytes(project, ["."]) == before


@pytest.mark.parametrize("name, expected", [("train launcher", "train launcher"), (None, "-c")])
def test_a_stages_closing_line_names_it(name, expected):
    """The name a command gives (the train stage's launcher, process and worker give theirs), else the script's."""
    code = f"from tolstoy.console import run_stage; run_stage(lambda: None, {name!r})"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=python_env(), capture_output=True, text=True, check=True
    )
    assert f"tolstoy {expected}: " in result.stderr and "s, peak RSS " in result.stderr


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "configs/presets").glob("*.yaml")))
def test_a_preset_through_dvcs_own_override_parser_gives_valid_params_with_its_values(preset, tmp_path, monkeypatch):
    overrides = tools.preset.overrides(ROOT / "configs/presets" / preset)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(
        tmp_path / "params.yaml", [tools.preset.set_argument(key, value) for key, value in overrides.items()]
    )
    params = read_params(tmp_path / "params.yaml")
    assert {key: params[key.split(".")[0]][key.split(".")[1]] for key in overrides} == overrides
    if "../shared" in json.dumps(overrides) and not SHARED.is_dir():
        pytest.skip("its sources are in ../shared, which this machine lacks")
    monkeypatch.chdir(ROOT)  # patterns and configs are relative to the repository
    check_all(params)


def test_override_values_keep_spaces_quotes_backslashes_and_cyrillic(tmp_path):
    value = {"a-b": ["x y/Алёша (1).txt", 'q"uote', 'q\\"', "c:\\dir", "end\\"], "c": ["*.txt"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"groups": {"sources": {}}, "train": {"lr": 0.1}}))
    apply_overrides(
        tmp_path / "params.yaml",
        [tools.preset.set_argument("groups.sources", value), tools.preset.set_argument("train.lr", 5e-5)],
    )
    assert read_params(tmp_path / "params.yaml") == {"groups": {"sources": value}, "train": {"lr": 5e-5}}


def test_presets_apply_in_order_over_params_yaml_and_an_error_names_them(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the accelerate config params.yaml names
    first, second, misplaced = tmp_path / "first.yaml", tmp_path / "second.yaml", tmp_path / "misplaced.yaml"
    first.write_text("train:\n  lr: 0.01\n  max_steps: 10\n")
    second.write_text("train:\n  lr: 0.02\n")
    misplaced.write_text("trian:\n  lr: 0.02\n")
    params = read_params(ROOT / "params.yaml", [first, second])
    assert (params["train"]["lr"], params["train"]["max_steps"], params["train"]["batch_size"]) == (0.02, 10, 4)
    assert check_all(params, [first, second]).train.lr == 0.02
    with pytest.raises(StageError, match=f"^{re.escape(str(misplaced))}: trian must be a section of"):
        read_params(ROOT / "params.yaml", [misplaced])
    second.write_text("train:\n  lr: fast\n")
    with pytest.raises(StageError) as error:
        check_all(read_params(ROOT / "params.yaml", [first, second]), [first, second])
    assert str(error.value).startswith(f"params.yaml with {first} with {second}: train.lr='fast' must be a number")


def test_a_local_base_may_live_in_the_folder_a_stage_names(configs, project):
    """A recipe's base is an output of its own pipeline (--bases models/one-gpu/bases), not under bases/."""
    (project / "models/recipe/bases/made").mkdir(parents=True)
    (project / "bases/pretrained").mkdir(parents=True)
    configs["model"]["base"] = "models/recipe/bases/made"
    with pytest.raises(StageError, match="must be '' \\(from scratch\\), a model directory under bases/"):
        check_all(configs)
    assert check_all(configs, bases=Path("models/recipe/bases")).model.base == "models/recipe/bases/made"
    configs["model"]["base"] = "bases/pretrained"
    with pytest.raises(StageError, match="a model directory under models/recipe/bases/"):
        check_all(configs, bases=Path("models/recipe/bases"))


def test_every_key_of_every_section_says_what_it_is():
    """Each section's model documents its keys: the field docstrings (pydantic's descriptions)."""
    undocumented = [f"{s}.{k}" for s, m in SECTIONS.items() for k, f in m.model_fields.items() if not f.description]
    assert undocumented == []
