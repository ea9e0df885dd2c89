"""Experiments side by side in a terminal: the params that differ, then the results.

    python -m tools.compare            # the workspace, HEAD and HEAD's experiments
    python -m tools.compare -A         # every commit's experiments

Columns: experiment, each param whose value differs between the rows (a long list as its
length, where `dvc exp show` cuts it), then a few of the metrics under short headers, rounded:
validation bits per character, the mean style gap (groups) and perplexity (evaluate), training
seconds and tokens/s (train), distinct-2 of the samples (sample).
"""

import argparse
import json
import subprocess

import pandas as pd

RESULTS = {  # column -> (metrics file, key path)
    "bits/char": ("metrics/eval.json", ("bits_per_char",)),
    "style gap": ("metrics/eval.json", ("style_gap", "mean")),
    "perplexity": ("metrics/eval.json", ("perplexity",)),
    "train s": ("metrics/train.json", ("train_seconds",)),
    "tokens/s": ("metrics/train.json", ("train_tokens_per_sec",)),
    "distinct-2": ("metrics/sample.json", ("sample_distinct_2",)),
}


def experiments(all_commits=False):
    """(name, rev, data) for every row of `dvc exp show --json`: workspace, baselines, experiments."""
    command = ["dvc", "exp", "show", "--json"] + (["-A"] if all_commits else [])
    table = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    for commit in table:
        yield commit.get("name") or short(commit["rev"]), commit["rev"], commit_data(commit)
        for experiment in commit.get("experiments") or []:
            for run in experiment["revs"]:
                yield experiment.get("name") or short(run["rev"]), run["rev"], commit_data(run)


def short(rev):
    return rev if rev == "workspace" else rev[:7]


def commit_data(row):
    return (row.get("data") or {}) if not row.get("error") else {}


def flat(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", shown(value) if isinstance(value, list) else value


def shown(items):
    """A list as JSON, or, when that is long, as its length."""
    text = json.dumps(items, ensure_ascii=False)
    return text if len(text) <= 40 else f"[{len(items)} items]"


def lookup(data, path, keys):
    value = ((data.get("metrics") or {}).get(path) or {}).get("data") or {}
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def comparison(rows):
    params = [
        dict(flat(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})) for _, _, data in rows
    ]
    changed = [key for key in dict.fromkeys(k for p in params for k in p) if len({str(p.get(key)) for p in params}) > 1]
    table = pd.DataFrame(
        [
            {
                "experiment": name,
                **{key: p.get(key) for key in changed},
                **{column: lookup(data, path, keys) for column, (path, keys) in RESULTS.items()},
            }
            for (name, _, data), p in zip(rows, params)
        ]
    )
    for column in RESULTS:  # a figure no row has reads as missing, not as None
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table.round({"bits/char": 4, "style gap": 4, "perplexity": 2, "train s": 1, "tokens/s": 0, "distinct-2": 3})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    rows = list(experiments(parser.parse_args().all_commits))
    print(comparison(rows).to_string(index=False, na_rep="-"))


if __name__ == "__main__":
    main()
