"""A preset (a YAML file of params.yaml overrides, section by section, like
configs/presets/one-gpu.yaml) as the `-S` arguments of `dvc exp run`, printed shell-quoted or run:

    python -m tools.preset configs/presets/one-gpu.yaml                  # prints -S tokenize.block_size=512 ...
    python -m tools.preset configs/presets/style-groups.yaml --run style [more dvc exp run arguments]

Values are written in the override grammar `-S` reads, strings quoted. Use `--run` rather than
`dvc exp run $(...)`: the shell splits the output of $(...) at every space and keeps its quotes.
"""

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml


def overrides(path):
    """{"section.key": value} of a preset file."""
    sections = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return {f"{section}.{key}": value for section, values in sections.items() for key, value in values.items()}


def override_value(value):
    """A value in the override grammar `dvc exp run -S` reads (Hydra's): strings quoted, so any character goes."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {override_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(override_value, value)) + "]"
    if isinstance(value, str):
        return quoted(value)
    return json.dumps(value)  # numbers, true, false, null


def quoted(text):
    """A quoted string of the grammar: a backslash is itself, except before a quote, where a run of them doubles."""
    escaped = re.sub(r'(\\*)"', lambda run: 2 * run.group(1) + '\\"', text)
    return '"' + re.sub(r"(\\+)$", lambda run: 2 * run.group(1), escaped) + '"'


def set_argument(key, value):
    """`key=value` as `dvc exp run -S` reads it; a mapping as `++key=...`, which may add keys to the params' own."""
    return f"{'++' if isinstance(value, dict) else ''}{key}={override_value(value)}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", type=Path)
    parser.add_argument(
        "--run", metavar="NAME", help="run `dvc exp run -n NAME` with the preset (and the arguments after it)"
    )
    args, dvc_arguments = parser.parse_known_args()
    if dvc_arguments and not args.run:
        parser.error(f"unrecognized arguments: {' '.join(dvc_arguments)}")
    settings = [
        argument for key, value in overrides(args.preset).items() for argument in ("-S", set_argument(key, value))
    ]
    if args.run:
        sys.exit(subprocess.run(["dvc", "exp", "run", "-n", args.run, *settings, *dvc_arguments]).returncode)
    print(" ".join(shlex.quote(argument) for argument in settings))


if __name__ == "__main__":
    main()
