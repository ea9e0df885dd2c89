"""Wheels of this project's runtime requirements and their dependencies, at the versions installed
here (setup.sh), for another machine's Python, to install there without a package index. torch
is left out (a GPU machine has its own CUDA build), and so are the test-only requirements.

    python -m tools.wheels_for 3.12 .whl [--skip numpy pandas ...]    # here, where pip can download
    pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site   # there

--skip names packages the other machine already has. A package published only as source is built
into a wheel here (pure Python ones only work that way).
"""

import argparse
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
NOT_NEEDED = {"torch", "pytest", "moto"}
PLATFORMS = [
    f"{tag}_x86_64"
    for tag in (
        "manylinux1",
        "manylinux2014",
        "manylinux_2_17",
        "manylinux_2_24",
        "manylinux_2_27",
        "manylinux_2_28",
        "manylinux_2_31",
        "manylinux_2_34",
        "manylinux_2_35",
    )
]


def normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_closure(roots):
    """{name: installed version} of `roots` and everything they need, as installed in this environment."""
    found, todo = {}, list(roots)
    while todo:
        name = normal(todo.pop())
        if name in found:
            continue
        distribution = importlib.metadata.distribution(name)
        found[name] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if not requirement.marker or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("python_version", help="the other machine's Python, e.g. 3.12")
    parser.add_argument("out", type=Path)
    parser.add_argument("--skip", nargs="*", default=[], help="packages the other machine has")
    args = parser.parse_args()
    roots = [
        Requirement(line).name
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    wanted = installed_closure(name for name in roots if normal(name) not in NOT_NEEDED)
    skipped = {normal(name) for name in args.skip} | NOT_NEEDED
    platforms = [option for tag in PLATFORMS for option in ("--platform", tag)]
    for name, version in sorted(wanted.items()):
        if name in skipped:
            continue
        pin, pip = f"{name}=={version}", [sys.executable, "-m", "pip", "-q"]
        download = pip + [
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            args.python_version,
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(args.out),
            pin,
        ]
        if subprocess.run(download, capture_output=True).returncode:
            subprocess.run(pip + ["wheel", "--no-deps", "-w", str(args.out), pin], check=True)
    print(f"{len(list(args.out.glob('*.whl')))} wheels in {args.out}")


if __name__ == "__main__":
    main()
