"""A preset's `-S` arguments for `dvc exp run` (a preset is a YAML file of params.yaml overrides,
section by section, like configs/presets/one-gpu.yaml):

    dvc exp run -n one-gpu $(python -m tools.preset configs/presets/one-gpu.yaml)
    python -m tools.preset configs/presets/style-groups.yaml --run style [other dvc exp run arguments]

`--run NAME` runs `dvc exp run -n NAME` itself: a value with a space in it (a file name) needs
that, since the shell splits the output of $(...) at every space.
"""
import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import yaml


def overrides(path):
    """{"section.key": value} of a preset file."""
    sections = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return {f"{section}.{key}": value for section, values in sections.items() for key, value in values.items()}


def set_argument(key, value):
    """`key=value` as `dvc exp run -S` reads it (YAML, one line)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, sort_keys=False, width=float("inf"))
    return f"{key}={text.strip().removesuffix('...').strip()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", type=Path)
    parser.add_argument("--run", metavar="NAME", help="run `dvc exp run -n NAME` with the preset (and the arguments after it)")
    args, dvc_arguments = parser.parse_known_args()
    if dvc_arguments and not args.run:
        parser.error(f"unrecognized arguments: {' '.join(dvc_arguments)}")
    settings = [argument for key, value in overrides(args.preset).items() for argument in ("-S", set_argument(key, value))]
    if args.run:
        sys.exit(subprocess.run(["dvc", "exp", "run", "-n", args.run, *settings, *dvc_arguments]).returncode)
    print(" ".join(shlex.quote(argument) for argument in settings))


if __name__ == "__main__":
    main()
