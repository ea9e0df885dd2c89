"""recipes/one-gpu/pipeline.yaml, copied to dvc.yaml, end to end at tiny sizes: a base pretrained on other
texts, then fine-tuned on the pages, in a pipeline of its own whose dvc.lock records the base and what it was
made from."""

import re
import shutil

import pytest
import yaml

from bench.workspace import with_preset_values
from tests.helpers import ROOT, copy_of, dvc, foreign, ran_stages, write_author
from tolstoy.files import read_json

PIPELINE, RECIPE = "recipes/one-gpu/pipeline.yaml", "recipes/one-gpu/dvc.yaml"
BASE_STAGES = ["base-validate", "base-fetch", "base-clean", "base-tokenizer", "base-tokenize", "base-train"]
TUNING_STAGES = ["validate", "tokenizer", "tokenize", "groups", "train", "evaluate", "sample"]
TINY_SHAPE = {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64, "dropout": 0.0}
TINY_RUN = {
    "lr": 0.002,
    "warmup_steps": 2,
    "max_steps": 8,
    "batch_size": 4,
    "eval_steps": 4,
    "save_steps": 4,
    "eval_blocks": 8,
    "patience": 0,
}


def recipe_stages(output):
    """The recipe's stages a `dvc repro` output says it ran, in order."""
    return re.findall(rf"Running stage '{re.escape(RECIPE)}:([\w-]+)'", output)


@pytest.fixture
def recipe_repo(reproduced, tmp_path):
    """A copy of the reproduced tiny project whose recipe presets are shrunk. The base's texts (another
    author's) and the groups' are written into the copy's own ../shared (tmp_path/shared): the suite
    needs no ../shared of the machine."""
    directory, env = copy_of(reproduced, tmp_path / "repo")
    assert "up to date" in dvc(directory, "status", env=env).stdout  # the recipe, not yet copied, is unseen
    shutil.copy(directory / PIPELINE, directory / RECIPE)
    other = write_author(tmp_path / "shared/other", [foreign("work-a", 150), foreign("work-b", 150)])
    unseen = write_author(tmp_path / "shared/unseen", [foreign("work-c", 60)])
    with_preset_values(directory, "configs/presets/ruslit-base.yaml", {"fetch": {"urls": [other]}, "train": TINY_RUN})
    with_preset_values(
        directory, "recipes/one-gpu/base.yaml", {"tokenize": {"block_size": 32}, "model": TINY_SHAPE, "train": TINY_RUN}
    )
    with_preset_values(
        directory,
        "configs/presets/style-groups.yaml",
        {"groups": {"sources": {"unseen": [unseen], "other": [other]}, "reference": "unseen"}},
    )
    with_preset_values(
        directory,
        "recipes/one-gpu/finetune.yaml",
        {"tokenize": {"block_size": 32}, "train": TINY_RUN},
    )
    return directory, env


@pytest.mark.slow
def test_the_recipe_pretrains_then_fine_tunes_and_its_lock_records_the_base(recipe_repo):
    directory, env = recipe_repo
    first = dvc(directory, "repro", RECIPE, env=env)
    assert recipe_stages(first.stdout) == BASE_STAGES + TUNING_STAGES
    assert "up to date" in dvc(directory, "status", RECIPE, env=env).stdout

    lock = yaml.safe_load((directory / "recipes/one-gpu/dvc.lock").read_text(encoding="utf-8"))["stages"]
    base_model = next(out for out in lock["base-train"]["outs"] if out["path"] == "models/one-gpu/bases/ruslit")
    assert lock["base-fetch"]["params"]["configs/presets/ruslit-base.yaml"]["fetch.urls"][0].endswith("other/*.txt")
    assert "models/one-gpu/bases" in [dep["path"] for dep in lock["train"]["deps"]]
    assert lock["train"]["params"]["recipes/one-gpu/finetune.yaml"]["model.base"] == "models/one-gpu/bases/ruslit"
    assert read_json(directory / "metrics/one-gpu/base/clean.json")["documents"] == 2  # the other author's texts

    card = (directory / "models/one-gpu/model/README.md").read_text(encoding="utf-8")
    assert "Fine-tuned from `models/one-gpu/bases/ruslit`" in card
    base_vocabulary = read_json(directory / "models/one-gpu/bases/ruslit/tokenizer.json")["model"]["vocab"]
    assert read_json(directory / "models/one-gpu/tokenizer/tokenizer.json")["model"]["vocab"] == base_vocabulary
    scores = read_json(directory / "metrics/one-gpu/eval.json")
    assert scores["bits_per_char"] > 0 and set(scores["groups"]) == {"unseen", "other"}
    assert base_model["md5"] and (directory / "metrics/one-gpu/samples.md").is_file()

    # A base setting makes the base's stages that read it stale, and no other (DVC re-runs what follows).
    base_preset = directory / "recipes/one-gpu/base.yaml"
    base_preset.write_text(base_preset.read_text().replace("lr: 0.002", "lr: 0.003"), encoding="utf-8")
    stale = dvc(directory, "status", RECIPE, env=env).stdout
    assert re.findall(rf"^{re.escape(RECIPE)}:([\w-]+):", stale, re.M) == ["base-validate", "base-train"]

    # The main pipeline runs none of the recipe's stages.
    main = dvc(directory, "repro", env=env)
    assert ran_stages(main.stdout) == [] and RECIPE not in main.stdout


def test_each_recipe_stage_lists_the_keys_its_presets_set_among_its_params():
    """`dvc.yaml` names each preset key a stage reads, so changing one re-runs exactly those stages."""
    stages = yaml.safe_load((ROOT / PIPELINE).read_text(encoding="utf-8"))["stages"]
    for name, stage in stages.items():
        own = [p for p in stage["params"] if isinstance(p, str)]
        presets = [arg.split()[0] for arg in stage["cmd"].split("--preset ")[1:]]
        listed = {preset: keys for p in stage["params"] if isinstance(p, dict) for preset, keys in p.items()}
        for preset in presets:
            sections = yaml.safe_load((ROOT / preset).read_text(encoding="utf-8"))
            read = sorted(f"{s}.{k}" for s, keys in sections.items() for k in keys if s in own or f"{s}.{k}" in own)
            assert listed.get(preset, []) == read, (name, preset)
        assert set(listed) <= set(presets), name
