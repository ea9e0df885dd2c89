"""How faithfully the clean stage extracts each work: its text against the plain-text reference.

    python bench/clean_fidelity.py [--shared ../shared] [--json bench/results/clean_fidelity.json]

Runs the clean stage's extraction (params.yaml's clean section) on the seven pages of the
offline mirror and aligns the result with the same works in corpus/ruslit/prose/Tolstoy, word by
word: paragraphs that match exactly are aligned first, then the words of the gaps between them.
recall = reference characters (non-space) found in the output; extra = output characters not in
the reference. Targets: recall >= 99.5%, extra <= 0.1%.
"""
import argparse
import difflib
import html
import json
import time
import unicodedata
from pathlib import Path

import pandas as pd

from stages.clean import extract_paragraphs
from stages.charset import decode_page
from stages.params import load_params

WORKS = {
    "text_0040.shtml": "Война и мир. Том 1",
    "text_0050.shtml": "Война и мир. Том 2",
    "text_0060.shtml": "Война и мир. Том 3",
    "text_0070.shtml": "Война и мир. Том 4",
    "text_0080.shtml": "Анна Каренина",
    "text_0090.shtml": "Воскресение",
    "text_1860_dekabristy.shtml": "Декабристы",
}


def lines(text):
    return [" ".join(line.split()) for line in unicodedata.normalize("NFC", text).split("\n") if line.strip()]


def reference_lines(path):
    # The reference files keep some French letters as literal character references ("G&#234;nes").
    return lines(html.unescape(path.read_text(encoding="utf-8")))


def matched_chars(reference, output):
    """Characters (non-space) of reference words aligned with equal output words."""
    total = 0
    coarse = difflib.SequenceMatcher(None, reference, output, autojunk=False)
    for tag, i1, i2, j1, j2 in coarse.get_opcodes():
        if tag == "equal":
            total += sum(len(line.replace(" ", "")) for line in reference[i1:i2])
            continue
        ref_words = " ".join(reference[i1:i2]).split()
        out_words = " ".join(output[j1:j2]).split()
        fine = difflib.SequenceMatcher(None, ref_words, out_words, autojunk=False)
        total += sum(len(w) for block in fine.get_matching_blocks() for w in ref_words[block.a:block.a + block.size])
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--json", type=Path, default=Path("bench/results/clean_fidelity.json"))
    args = parser.parse_args()
    params = load_params("clean")
    mirror = args.shared / "mirror/az.lib.ru/t/tolstoj_lew_nikolaewich"
    reference_dir = args.shared / "corpus/ruslit/prose/Tolstoy"
    rows = []
    for page, title in WORKS.items():
        started = time.perf_counter()
        text, _ = decode_page((mirror / page).read_bytes())
        output = lines("\n".join(extract_paragraphs(text, params)))
        seconds = time.perf_counter() - started
        reference = reference_lines(reference_dir / f"{title}.txt")
        matched = matched_chars(reference, output)
        ref_chars = sum(len(line.replace(" ", "")) for line in reference)
        out_chars = sum(len(line.replace(" ", "")) for line in output)
        rows.append({"work": title, "reference_chars": ref_chars, "output_chars": out_chars,
                     "recall_%": round(100 * matched / ref_chars, 3), "extra_%": round(100 * (out_chars - matched) / out_chars, 3),
                     "extract_s": round(seconds, 2)})
    table = pd.DataFrame(rows)
    totals = table[["reference_chars", "output_chars"]].sum()
    matched_total = sum(r["recall_%"] * r["reference_chars"] / 100 for r in rows)
    summary = {"recall_%": round(100 * matched_total / totals["reference_chars"], 3),
               "extra_%": round(100 * (totals["output_chars"] - matched_total) / totals["output_chars"], 3)}
    print(table.to_string(index=False))
    print(f"all works: recall {summary['recall_%']}%, extra {summary['extra_%']}%")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"works": rows, "all": summary}, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    main()
