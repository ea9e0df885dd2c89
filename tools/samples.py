"""Two experiments' samples side by side, prompt by prompt.

    python -m tools.samples <experiment or git rev> <experiment or git rev> [--width 60]

`workspace` names the files in this checkout; experiment names come from `dvc exp show`.
"""

import argparse
import re
import subprocess
import textwrap
from itertools import zip_longest
from pathlib import Path

from tools.compare import experiments

SAMPLES = "metrics/samples.md"  # the sample stage's, as dvc.yaml names it


def samples_text(name, revs):
    if name == "workspace":
        return Path(SAMPLES).read_text(encoding="utf-8")
    rev = revs.get(name, name)
    return subprocess.run(["git", "show", f"{rev}:{SAMPLES}"], capture_output=True, text=True, check=True).stdout


def by_prompt(markdown):
    """{prompt: continuation text} of a samples.md."""
    sections = re.split(r"^## (.+)$", markdown, flags=re.M)[1:]
    return {prompt: body.strip() for prompt, body in zip(sections[::2], sections[1::2])}


def side_by_side(left, right, names, width):
    lines = [f"{names[0]:<{width}} | {names[1]}", f"{'-' * width}-+-{'-' * width}"]
    for prompt in dict.fromkeys([*left, *right]):
        lines += ["", f"## {prompt}"]
        columns = [textwrap.wrap(side.get(prompt, "(no sample)"), width) for side in (left, right)]
        lines += [f"{a:<{width}} | {b}" for a, b in zip_longest(*columns, fillvalue="")]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--width", type=int, default=60, help="characters per column")
    args = parser.parse_args()
    revs = {name: rev for name, rev, _ in experiments(all_commits=True)}
    texts = [by_prompt(samples_text(name, revs)) for name in (args.first, args.second)]
    print(side_by_side(*texts, (args.first, args.second), args.width))


if __name__ == "__main__":
    main()
