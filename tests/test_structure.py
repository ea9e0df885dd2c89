"""The code's shape: each stage's dvc.yaml code deps are exactly the project modules it imports,
modules and functions stay short enough to read at a glance, and only tests import tests."""
import ast

import pytest
import yaml

from stages.train.fingerprint import module_file, project_modules
from tests.helpers import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
# Modules a stage's command starts in other processes (the train launcher runs stages.train.process).
LAUNCHED = {"train": ["stages.train.process"]}


def imported_files(stage):
    entry = STAGES[stage]["cmd"].split("python -m ", 1)[1].split()[0]
    entry += ".__main__" if module_file(entry).name == "__init__.py" else ""  # `python -m` of a package
    names = set().union(*(project_modules(m) for m in [entry, *LAUNCHED.get(stage, [])]))
    return {str(module_file(n).relative_to(ROOT)) for n in names if module_file(n).name != "__init__.py"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_the_imported_modules(stage):
    code_deps = {d for d in STAGES[stage]["deps"] if d.endswith(".py")}
    assert code_deps == imported_files(stage)


CODE = sorted(path for folder in ("stages", "bench", "tools") for path in (ROOT / folder).rglob("*.py"))


def test_no_function_in_stages_bench_or_tools_is_longer_than_50_lines():
    long = []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 50:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def test_no_module_in_stages_bench_or_tools_is_longer_than_200_lines():
    lengths = {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines()) for path in CODE}
    assert {path: n for path, n in lengths.items() if n > 200} == {}


def test_nothing_but_tests_imports_tests():
    importers = []
    for path in CODE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            importers += [f"{path.relative_to(ROOT)}: {name}" for name in names if name == "tests" or name.startswith("tests.")]
    assert importers == []


def test_the_train_stage_reads_the_generation_defaults_and_no_other_sample_param():
    from stages.params import GENERATION_KEYS

    sample_params = [p.split(".", 1)[1] for p in STAGES["train"]["params"] if isinstance(p, str) and p.startswith("sample.")]
    assert sample_params == list(GENERATION_KEYS)
