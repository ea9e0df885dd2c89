"""The code's shape: each stage's dvc.yaml code deps are exactly the project modules it imports,
and stage functions stay short enough to read at a glance."""
import ast

import pytest
import yaml

from stages.training.fingerprint import module_file, project_modules
from tests.conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
# Modules a stage's command starts in other processes (the train launcher runs stages.train).
LAUNCHED = {"train": ["stages.train"]}


def imported_files(stage):
    entry = STAGES[stage]["cmd"].split("python -m ", 1)[1].split()[0]
    names = set().union(*(project_modules(m) for m in [entry, *LAUNCHED.get(stage, [])]))
    return {str(module_file(n).relative_to(ROOT)) for n in names if module_file(n).name != "__init__.py"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_the_imported_modules(stage):
    code_deps = {d for d in STAGES[stage]["deps"] if d.endswith(".py")}
    assert code_deps == imported_files(stage)


def test_no_function_in_stages_is_longer_than_50_lines():
    long = []
    for path in sorted((ROOT / "stages").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 50:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []
