"""How faithfully the clean stage extracts each work: its text against the plain-text reference.

    python -m bench.clean_fidelity [--shared ../shared] [--json bench/results/clean_fidelity.json]

Runs the clean stage's extraction (params.yaml's clean section) on the seven pages of the
offline mirror, against the same works in corpus/ruslit/prose/Tolstoy, and on works of other
authors from corpus/ruslit rendered in three layouts by the builders in bench/sites.py
(az.lib.ru cp1251 HTML, a Wikisource-like UTF-8 page with footnotes, a lib.ru KOI8-R
hard-wrapped <pre>), each decoded with no charset declared over HTTP. Output and reference are
aligned word by word: paragraphs that match exactly first, then the words of the gaps.
recall = reference characters (non-space) found in the output; extra = output characters not in
the reference; paragraphs = reference paragraphs found exactly, as one output line.
Targets: recall >= 99.5%, extra <= 0.1%, paragraphs >= 95%.
"""

import argparse
import difflib
import html
import json
import time
import unicodedata
from pathlib import Path

import pandas as pd

from bench import sites
from tolstoy.config.params import load_sections
from tolstoy.data.charset import decode_page
from tolstoy.data.cleaning import extract_paragraphs, prepare_tree

MIRRORED = {
    "text_0040.shtml": "Война и мир. Том 1",
    "text_0050.shtml": "Война и мир. Том 2",
    "text_0060.shtml": "Война и мир. Том 3",
    "text_0070.shtml": "Война и мир. Том 4",
    "text_0080.shtml": "Анна Каренина",
    "text_0090.shtml": "Воскресение",
    "text_1860_dekabristy.shtml": "Декабристы",
}
OTHER_AUTHORS = ["Chekhov/Ванька", "Chekhov/Палата №6", "Dostoevsky/Белые ночи", "Gogol/Шинель", "Gorky/Макар Чудра"]
LAYOUTS = {  # characters a charset lacks become character references, as the sites write them
    "az.lib.ru": lambda title, author, chapters: sites.page_html(title, chapters).encode("cp1251", "xmlcharrefreplace"),
    "wikisource": lambda title, author, chapters: sites.page_wikisource(title, chapters).encode("utf-8"),
    "lib.ru <pre>": lambda title, author, chapters: sites.page_libru(title, author, chapters).encode(
        "koi8-r", "xmlcharrefreplace"
    ),
}


def lines(text):
    return [" ".join(line.split()) for line in unicodedata.normalize("NFC", text).split("\n") if line.strip()]


def reference_lines(path):
    # The reference files keep some French letters as literal character references ("G&#234;nes").
    return lines(html.unescape(path.read_text(encoding="utf-8")))


def alignment(reference, output):
    """(characters (non-space) of reference words aligned with equal output words, reference
    paragraphs equal to an output line)."""
    chars = paragraphs = 0
    coarse = difflib.SequenceMatcher(None, reference, output, autojunk=False)
    for tag, i1, i2, j1, j2 in coarse.get_opcodes():
        if tag == "equal":
            chars += sum(len(line.replace(" ", "")) for line in reference[i1:i2])
            paragraphs += i2 - i1
            continue
        ref_words = " ".join(reference[i1:i2]).split()
        out_words = " ".join(output[j1:j2]).split()
        fine = difflib.SequenceMatcher(None, ref_words, out_words, autojunk=False)
        chars += sum(len(w) for block in fine.get_matching_blocks() for w in ref_words[block.a : block.a + block.size])
    return chars, paragraphs


def score(layout, work, body, reference, params):
    started = time.perf_counter()
    page = decode_page(body)
    output = lines("\n".join(extract_paragraphs(prepare_tree(page.text)[0], params)[0]))
    seconds = time.perf_counter() - started
    matched, paragraphs = alignment(reference, output)
    ref_chars = sum(len(line.replace(" ", "")) for line in reference)
    out_chars = sum(len(line.replace(" ", "")) for line in output)
    row = {
        "layout": layout,
        "work": work,
        "encoding": page.encoding,
        "reference_chars": ref_chars,
        "output_chars": out_chars,
        "matched_chars": matched,
        "reference_paragraphs": len(reference),
        "exact_paragraphs": paragraphs,
        "output_paragraphs": len(output),
        "extract_s": round(seconds, 2),
    }
    return {**row, **percentages(row)}


def rendered_works(corpus):
    """(layout, work, page bytes, reference lines) for every other-author work in every layout."""
    for name in OTHER_AUTHORS:
        reference = reference_lines(corpus / f"{name}.txt")
        author, title = reference[0], reference[1]
        chapters = [(author, reference[1:])]
        for layout, render in LAYOUTS.items():
            yield layout, name, render(title.capitalize(), author, chapters), reference


def percentages(sums):
    """recall, extra and exact paragraphs, in %, of one work's counts or of their sums."""
    return {
        "recall_%": round(100 * sums["matched_chars"] / sums["reference_chars"], 3),
        "extra_%": round(100 * (sums["output_chars"] - sums["matched_chars"]) / sums["output_chars"], 3),
        "paragraphs_%": round(100 * sums["exact_paragraphs"] / sums["reference_paragraphs"], 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--json", type=Path, default=Path("bench/results/clean_fidelity.json"))
    args = parser.parse_args()
    (params,) = load_sections("clean")
    mirror = args.shared / "mirror/az.lib.ru/t/tolstoj_lew_nikolaewich"
    corpus = args.shared / "corpus/ruslit/prose"
    rows = [
        score(
            "mirror", title, (mirror / page).read_bytes(), reference_lines(corpus / "Tolstoy" / f"{title}.txt"), params
        )
        for page, title in MIRRORED.items()
    ]
    rows += [score(*work, params) for work in rendered_works(corpus)]
    table = pd.DataFrame(rows)
    summary = pd.DataFrame(
        [
            {"layout": layout, **percentages(group.sum(numeric_only=True))}
            for layout, group in table.groupby("layout", sort=False)
        ]
    )
    print(
        table[
            [
                "layout",
                "work",
                "encoding",
                "reference_chars",
                "output_chars",
                "recall_%",
                "extra_%",
                "reference_paragraphs",
                "output_paragraphs",
                "paragraphs_%",
                "extract_s",
            ]
        ].to_string(index=False)
    )
    print()
    print(summary.to_string(index=False))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"works": rows, "layouts": summary.to_dict("records")}, ensure_ascii=False, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
