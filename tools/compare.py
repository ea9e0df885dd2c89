"""Experiments side by side in a terminal: the params that differ, then the results.

    python -m tools.compare            # the workspace, HEAD and HEAD's experiments
    python -m tools.compare -A         # every commit's experiments

Columns: experiment, each param whose value differs between the rows, validation bits per
character and perplexity (evaluate), training seconds (train_cost), tokens/s and MFU (DVCLive).
"""
import argparse
import json
import subprocess

import pandas as pd

RESULTS = {  # column -> (metrics file, key path)
    "bits/char": ("metrics/eval.json", ("bits_per_char",)),
    "perplexity": ("metrics/eval.json", ("perplexity",)),
    "train s": ("metrics/train_cost.json", ("actual", "seconds")),
    "tokens/s": ("metrics/train/metrics.json", ("train", "tokens_per_sec")),
    "MFU %": ("metrics/train/metrics.json", ("train", "mfu")),
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
            yield f"{prefix}{key}", json.dumps(value, ensure_ascii=False) if isinstance(value, list) else value


def lookup(data, path, keys):
    value = ((data.get("metrics") or {}).get(path) or {}).get("data") or {}
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def comparison(rows):
    params = [dict(flat(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})) for _, _, data in rows]
    changed = [key for key in dict.fromkeys(k for p in params for k in p) if len({str(p.get(key)) for p in params}) > 1]
    table = pd.DataFrame([
        {"experiment": name, **{key: p.get(key) for key in changed},
         **{column: lookup(data, path, keys) for column, (path, keys) in RESULTS.items()}}
        for (name, _, data), p in zip(rows, params)
    ])
    table["MFU %"] = table["MFU %"].astype(float) * 100
    return table.round({"bits/char": 4, "perplexity": 2, "train s": 1, "tokens/s": 0, "MFU %": 1})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    rows = list(experiments(parser.parse_args().all_commits))
    print(comparison(rows).to_string(index=False, na_rep="-"))


if __name__ == "__main__":
    main()
