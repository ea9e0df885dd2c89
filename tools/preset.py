"""A preset's `-S` arguments for `dvc exp run` (a preset is a YAML file of params.yaml overrides,
section by section, like configs/presets/one-gpu.yaml):

    dvc exp run -n one-gpu $(python -m tools.preset configs/presets/one-gpu.yaml)
"""
import argparse
import shlex
from pathlib import Path

import yaml


def overrides(path):
    """{"section.key": value} of a preset file."""
    sections = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return {f"{section}.{key}": value for section, values in sections.items() for key, value in values.items()}


def set_argument(key, value):
    """`key=value` as `dvc exp run -S` reads it (YAML, one line)."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", type=Path)
    args = parser.parse_args()
    print(" ".join(f"-S {shlex.quote(set_argument(key, value))}" for key, value in overrides(args.preset).items()))


if __name__ == "__main__":
    main()
