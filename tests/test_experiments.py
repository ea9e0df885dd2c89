"""Reading and comparing experiments offline: a queued sweep, `dvc exp show` and `dvc metrics diff`
in a terminal, the plots page, the comparison table, samples side by side (the real `dvc` CLI in a
temporary git repository, tiny params)."""

import json
import re
import shutil
import sys

import pytest
import yaml

from tests.helpers import ROOT, built_once, copy_of, dvc, file_bytes, ran_stages, run
from tolstoy.files import read_json
from tolstoy.model.bases import base_identity

pytestmark = pytest.mark.slow  # end to end: the real dvc CLI in temporary git repositories

SERIES = ["train/loss", "eval/loss", "eval/bits_per_char", "train/learning_rate"]


SWEEP = {
    "hot": ["train.lr=0.01", "sample.temperature=1.0"],
    "wide": ["model.n_embd=64", "sample.seed=7", "evaluate.max_blocks=8"],
}


@pytest.fixture(scope="session")
def swept(reproduced, tmp_path_factory, worker_id):
    """The tiny run's repository with SWEEP queued and run, as the README's sweep is: built once
    for the whole test run, whichever worker asks first."""
    return built_once(
        tmp_path_factory, worker_id, "swept", lambda directory: run_sweep(reproduced, directory)
    ), reproduced[1]


def run_sweep(reproduced, directory):
    shutil.rmtree(directory)
    directory, env = copy_of(reproduced, directory)
    for name, settings in SWEEP.items():
        dvc(
            directory,
            "exp",
            "run",
            "--queue",
            "-n",
            name,
            *[a for setting in settings for a in ("-S", setting)],
            env=env,
        )
    dvc(directory, "exp", "run", "--run-all", env=env)


@pytest.fixture
def sweep(swept, tmp_path):
    """A private copy of the swept repository; (directory, env)."""
    return copy_of(swept, tmp_path / "repo")


def experiment_revs(directory, env):
    """name -> the revision entry (rev, data) of each experiment of HEAD in `dvc exp show --json`."""
    table = json.loads(dvc(directory, "exp", "show", "--json", env=env).stdout)
    return {e["name"]: e["revs"][0] for commit in table for e in (commit.get("experiments") or [])}


def experiment_rows(directory, env):
    """name -> the data of each experiment of HEAD in `dvc exp show --json`."""
    return {name: rev["data"] for name, rev in experiment_revs(directory, env).items()}


def test_a_sweep_compares_in_a_terminal(sweep):
    directory, env = sweep
    rows = experiment_rows(directory, env)
    assert set(rows) == set(SWEEP)
    wide = rows["wide"]
    assert (
        wide["params"]["params.yaml"]["data"]["sample"]["seed"] == 7
        and wide["metrics"]["metrics/eval.json"]["data"]["val_blocks"] == 8
    )
    for name, data in rows.items():
        metrics = {
            f"{path}:{key}" for path, found in data["metrics"].items() for key in found["data"]
        }  # one level: the files are flat
        assert len(metrics) <= 16 and "metrics/eval.json:bits_per_char" in metrics, (name, sorted(metrics))
    shown = dvc(directory, "exp", "show", "--only-changed", "--no-pager", env={**env, "COLUMNS": "200"}).stdout
    lines = shown.splitlines()
    header = next(line for line in lines if "bits_per_char" in line)
    column = header.index("bits_per_char")
    for name, data in rows.items():
        row = next(line for line in lines if f"[{name}]" in line)  # "├── 68d0d1c [hot]"
        cell = row[column - 2 : column + len("bits_per_char") + 2]
        assert "…" not in cell and re.search(r"\d\.\d{3}", cell), f"{name}: {cell!r}\n{shown}"
    diff = dvc(directory, "metrics", "diff", "hot", "wide", env=env).stdout
    assert re.search(r"metrics/eval\.json\s+bits_per_char\s+[\d.]+\s+[\d.]+\s+-?[\d.]+", diff), diff


def external_references(html):
    """src/href attributes that point off the page."""
    return re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//[^"'\s>]+""", html, flags=re.I)


def series_rows(directory, env, series, rev):
    """The value column of one DVCLive series, as the workspace (rev None) or a commit holds it."""
    path = f"metrics/train/plots/metrics/{series}.tsv"
    text = (
        (directory / path).read_text()
        if rev is None
        else run(["git", "show", f"{rev}:{path}"], directory, env=env).stdout
    )
    return [line.split("\t")[1] for line in text.splitlines()[1:]]


def test_the_plots_page_draws_every_series_with_no_network(sweep, tmp_path):
    directory, env = sweep
    revs = {name: data["rev"] for name, data in experiment_revs(directory, env).items()}
    for command, shown in (
        (["plots", "show"], [None]),
        (["plots", "diff", "hot", "wide"], [revs["hot"], revs["wide"]]),
    ):
        out = tmp_path / command[1]
        dvc(directory, *command, "-o", str(out), env=env)
        html = (out / "index.html").read_text(encoding="utf-8")
        assert external_references(html) == [] and "vegaEmbed" in html and "cdn.jsdelivr" not in html
        titles = re.findall(r'"title": \{\s*"text": "([^"]+)"', html) or re.findall(r'"title": "([^"]+)"', html)
        assert sorted(set(titles)) == sorted(titles), titles  # each chart once
        for series in SERIES:  # every value of every series of every revision shown is embedded in the page
            for rev in shown:
                values = series_rows(directory, env, series, rev)
                assert values and all(value in html for value in values), (series, rev)
    assert "dvc_plots" not in run(["git", "status", "--porcelain"], directory, env=env).stdout


def test_the_comparison_fits_a_terminal(sweep):
    directory, env = sweep
    output = run(["python", "-m", "tools.compare"], directory, env=env).stdout
    header, *rows = output.splitlines()
    assert header.split() == [
        "experiment",
        "model.n_embd",
        "train.lr",
        "evaluate.max_blocks",
        "sample.temperature",
        "sample.seed",
        "bits/char",
        "style",
        "gap",
        "perplexity",
        "train",
        "s",
        "tokens/s",
        "distinct-2",
    ]
    names = [row.split()[0] for row in rows]
    assert {"workspace", *SWEEP} <= set(names)
    hot = rows[names.index("hot")].split()
    assert list(map(float, hot[1:6])) == [32, 0.01, 16, 1.0, 1337] and 0 < float(hot[6]) < 8 and hot[7] == "-", output
    assert float(hot[9]) > 0 and float(hot[10]) > 0, output
    assert 0 < float(hot[-1]) <= 1, output


def test_samples_side_by_side(sweep):
    directory, env = sweep
    output = run(["python", "-m", "tools.samples", "hot", "wide", "--width", "40"], directory, env=env).stdout
    assert output.splitlines()[0].startswith("hot") and "| wide" in output.splitlines()[0]
    assert "## Пьер закашлялся и" in output and "## Наташа" in output
    assert all(len(line.split(" | ")[0]) == 40 for line in output.splitlines() if " | " in line)


def test_plots_template_carries_its_libraries():
    template = (ROOT / "plots/template.html").read_text(encoding="utf-8")
    assert external_references(template) == [] and "{plot_divs}" in template
    for library in ("vega", "vega-lite", "vega-embed"):
        assert (ROOT / f"plots/licenses/{library}-LICENSE").is_file() and f"/* {library} " in template


def test_a_local_base_set_by_a_preset_fine_tunes_then_is_restored_and_replaced(reproduced, tmp_path, monkeypatch):
    """Fine-tuning a model put under bases/ (docs/training.md#presets), set by a preset through --run
    (a value with a space and Cyrillic kept whole), then the fault-table row "the files of a local base
    replaced": an unchanged base restores the finished run, other weights under its name retrain. A
    base trained on other texts: tests/test_recipes.py."""
    directory, env = copy_of(reproduced, tmp_path / "repo")
    shutil.copytree(directory / "models/model", directory / "bases/другой автор")
    preset = tmp_path / "tuned.yaml"
    preset.write_text(yaml.safe_dump({"model": {"base": "bases/другой автор"}}, allow_unicode=True), encoding="utf-8")
    tuned = run([sys.executable, "-m", "tools.preset", str(preset), "--run", "tuned"], directory, env=env)
    assert ran_stages(tuned.stdout)[-3:] == ["train", "evaluate", "sample"]
    monkeypatch.chdir(directory)
    card = (directory / "models/model/README.md").read_text(encoding="utf-8")
    base = base_identity("bases/другой автор", "")
    assert f"Fine-tuned from `bases/другой автор`, whose model files have sha256 {base['sha256']}." in card
    assert (
        read_json("models/tokenizer/tokenizer.json")["model"]["vocab"]
        == read_json("bases/другой автор/tokenizer.json")["model"]["vocab"]
    )
    assert "bases" in (directory / "dvc.lock").read_text() and read_json("metrics/eval.json")["bits_per_char"] > 0
    assert "up to date" in dvc(directory, "status", env=env).stdout

    before = file_bytes(directory, ["models/model", "metrics/train_cost.json"])
    forced = dvc(directory, "repro", "-f", "-s", "train", env=env)  # the base unchanged: the finished run is restored
    assert "its model and cost record are restored" in forced.stdout + forced.stderr
    assert file_bytes(directory, ["models/model", "metrics/train_cost.json"]) == before

    shutil.copy(
        directory / "models/model/model.safetensors", directory / "bases/другой автор/model.safetensors"
    )  # other weights, same shape
    status = dvc(directory, "status", env=env).stdout
    assert "train:" in status and "modified:           bases" in status
    rerun = dvc(directory, "repro", "train", env=env)
    assert "train" in ran_stages(rerun.stdout) and "were made with other base" in rerun.stdout + rerun.stderr
    assert (directory / "models/model/README.md").read_text(encoding="utf-8") != card  # names the new base's hash
