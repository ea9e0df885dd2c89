"""The code's shape: each stage's dvc.yaml code deps are exactly the project modules it imports,
functions stay short enough to read at a glance (but the training story, read top to bottom), and
only tests import tests."""

import ast

import pytest
import yaml

from tests.helpers import ROOT
from tolstoy.training.checkpoints import module_file, project_modules

PIPELINES = ["dvc.yaml", "recipes/one-gpu/pipeline.yaml"]  # the main pipeline, and each recipe's
STAGES = {
    (pipeline, name): stage
    for pipeline in PIPELINES
    for name, stage in yaml.safe_load((ROOT / pipeline).read_text(encoding="utf-8"))["stages"].items()
}


def imported_files(stage):
    entry = stage["cmd"].split("python -m ", 1)[1].split()[0]
    names = project_modules(entry)
    return {str(module_file(n).relative_to(ROOT)) for n in names if module_file(n).name != "__init__.py"}


@pytest.mark.parametrize("pipeline, stage", sorted(STAGES))
def test_code_deps_are_the_imported_modules(pipeline, stage):
    code_deps = {d for d in STAGES[pipeline, stage]["deps"] if d.endswith(".py")}
    assert code_deps == imported_files(STAGES[pipeline, stage])


CODE = sorted(path for folder in ("stages", "tolstoy", "bench", "tools") for path in (ROOT / folder).rglob("*.py"))


STORY = "tolstoy/training/run.py:train"  # a training run, top to bottom, as nanoGPT's train.py reads


def test_no_function_but_the_training_story_is_longer_than_50_lines():
    long = []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = f"{path.relative_to(ROOT)}:{getattr(node, 'name', '')}"
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.end_lineno - node.lineno + 1 > 50
                and name != STORY
            ):
                long.append(
                    f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
                )
    assert long == []


def test_nothing_but_tests_imports_tests():
    importers = []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            importers += [
                f"{path.relative_to(ROOT)}: {name}" for name in names if name == "tests" or name.startswith("tests.")
            ]
    assert importers == []


def test_the_train_stage_reads_the_generation_defaults_and_no_other_sample_param():
    from tolstoy.config.params import GENERATION_KEYS

    sample_params = [
        p.split(".", 1)[1]
        for p in STAGES["dvc.yaml", "train"]["params"]
        if isinstance(p, str) and p.startswith("sample.")
    ]
    assert sample_params == list(GENERATION_KEYS)
