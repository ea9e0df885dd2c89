"""Cleaning: fetched pages -> one table of documents (a parquet file) and a report row per page.

Decode each page (the charset its server or its <meta> declared when the text reads as Russian,
else the Cyrillic encoding whose text does; see tolstoy/data/charset.py), join hard-wrapped <pre>/plain
text into paragraphs, parse it (tolstoy/data/page_tree.py), extract the work with
trafilatura tuned for recall with the site's chrome pruned by XPath, unescape entities, NFC,
collapse whitespace, one paragraph per line; report (optionally drop) editorial apparatus,
optionally drop footnote markers and duplicates across documents. A warning names each page whose
text lost part of it: cut short mid-character, parsing stopped at libxml2's limits, or bytes that
do not decode (U+FFFD). Pages are cleaned in worker
processes side by side (tolstoy.data.pool.workers), duplicates then dropped in page order, so the
outputs are those of one process.
"""

import functools
import hashlib
import html
import logging
import re
import unicodedata
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import trafilatura

from tolstoy import StageError
from tolstoy.console import log, progress
from tolstoy.data.charset import charset_of, decode_page
from tolstoy.data.layouts import is_apparatus, unwrap
from tolstoy.data.page_tree import parse_page
from tolstoy.data.pool import ordered_map
from tolstoy.data.sources import MANIFEST
from tolstoy.files import atomic_path, read_json, reading

FOOTNOTE_MARKER = re.compile(r"\s?\[\d{1,3}\]")
DOCS_SCHEMA = pa.schema(
    [("id", pa.string()), ("url", pa.string()), ("title", pa.string()), ("text", pa.string()), ("chars", pa.int64())]
)
MARK_OPEN, MARK_CLOSE = "⟦", "⟧"  # mathematical brackets: not in prose (trafilatura strips private-use characters)
PARAGRAPH_MARK = re.compile(f"{MARK_OPEN}\\d+{MARK_CLOSE}")
PARAGRAPH_TAG = re.compile(r"<(/?)(?:dd|h[3-6])\b", re.I)  # tags that become <p>
REPLACEMENT = "\ufffd"  # what a decoder writes for bytes it cannot decode
FEW_REPLACEMENTS = 3  # more in a page's text: not a stray character but bytes in another encoding


def prepare_tree(page):
    """The page as the tree trafilatura extracts the work from, and a Cut when parsing stopped short.

    libxml2 nests unclosed <dd> paragraphs (az.lib.ru has no <dl> around them) down to its depth
    limit of 256 and drops the rest of the work; trafilatura also discards the short <h3> chapter
    headings. As <p> both survive. trafilatura keeps only the first of paragraphs with equal text
    (chapter numbers "I", "II" of every part, a repeated "- Да."): a numbered mark makes each one
    distinct until extracted."""
    tree, cut = parse_page(PARAGRAPH_TAG.sub(r"<\1p", unwrap(page)))
    for number, paragraph in enumerate(tree.iter("p")):
        paragraph.text = f"{MARK_OPEN}{number}{MARK_CLOSE}{paragraph.text or ''}"
    return tree, cut


def extract_paragraphs(tree, params):
    """(paragraphs of the work, paragraphs that look like editorial apparatus) of a tree from
    prepare_tree; the apparatus is left among the paragraphs unless params.drop_apparatus."""
    text = trafilatura.extract(
        tree,
        favor_recall=True,
        include_comments=False,
        include_tables=False,
        deduplicate=False,
        prune_xpath=params.prune_xpath or None,
    )
    paragraphs = []
    for line in (text or "").split("\n"):
        line = unicodedata.normalize("NFC", html.unescape(PARAGRAPH_MARK.sub("", line)))
        if params.drop_footnote_markers:
            line = FOOTNOTE_MARKER.sub("", line)
        line = " ".join(line.split())
        if line:
            paragraphs.append(line)
    flags = [is_apparatus(p, i) for i, p in enumerate(paragraphs)]
    apparatus = [p for p, flag in zip(paragraphs, flags) if flag]
    if params.drop_apparatus:
        paragraphs = [p for p, flag in zip(paragraphs, flags) if not flag]
    return paragraphs, apparatus


def page_title(tree):
    """The text of the page's first <title> (where browsers find it)."""
    return " ".join((tree.findtext(".//title") or "").split())


def warn_of_losses(url, decoded, cut, paragraphs):
    """A warning for each way the page's text came out short of its bytes."""
    if decoded.unfinished:
        log.warning("%s: ends in the middle of a %s character, which is left out: cut short?", url, decoded.encoding)
    if cut:
        log.warning(
            "%s: the HTML parser stopped at its limit (%s): the last %d characters of the page (%.0f%%) "
            "are not in its text",
            url,
            cut.limit,
            cut.lost,
            100 * cut.lost / cut.chars,
        )
    replaced = sum(paragraph.count(REPLACEMENT) for paragraph in paragraphs)
    if replaced > FEW_REPLACEMENTS:
        log.warning(
            "%s: %d characters of its text are U+FFFD (%s), for bytes that do not decode as %s: "
            "does the page mix encodings?",
            url,
            replaced,
            REPLACEMENT,
            decoded.encoding,
        )


class Deduplicator:
    """Drops documents whose text repeats an earlier one, then paragraphs (of min_chars or more)
    already seen in an earlier document; short lines ("- Да.", "Глава I") legitimately repeat.
    Holds a 16-byte digest per paragraph, not the text."""

    def __init__(self, min_chars):
        self.min_chars, self.documents, self.paragraphs = min_chars, set(), set()

    def filter(self, doc):
        digest = hashlib.blake2b("\n".join(doc["paragraphs"]).encode(), digest_size=16).digest()
        if digest in self.documents:
            doc["dropped"] = "duplicate document"
            return
        self.documents.add(digest)
        own, paragraphs = set(), []
        for paragraph in doc["paragraphs"]:
            digest = hashlib.blake2b(paragraph.encode(), digest_size=16).digest()
            if len(paragraph) >= self.min_chars and digest in self.paragraphs:
                doc["duplicate_paragraphs"] += 1
                continue
            own.add(digest)
            paragraphs.append(paragraph)
        self.paragraphs |= own
        doc["paragraphs"] = paragraphs


def clean_page(record, raw, params):
    body = (raw / record["file"]).read_bytes()
    decoded = decode_page(body, charset_of(record["content_type"]), record["url"])
    page, declared, encoding, note = decoded.text, decoded.declared, decoded.encoding, decoded.note
    if note and (declared or encoding != "utf-8"):  # a warning when the page's own declaration was overruled
        log.log(logging.WARNING if declared else logging.INFO, "%s: decoded as %s (%s)", record["url"], encoding, note)
    tree, cut = prepare_tree(page)
    paragraphs, apparatus = extract_paragraphs(tree, params)
    warn_of_losses(record["url"], decoded, cut, paragraphs)
    chars = sum(map(len, paragraphs))
    if chars < params.min_chars:
        raise StageError(
            f"{record['url']} yields {chars} characters of text (min_chars={params.min_chars}): "
            "not a page with a work on it?"
        )
    return {
        "id": record["file"],
        "url": record["url"],
        "title": page_title(tree),
        "declared_encoding": declared,
        "encoding": encoding,
        "encoding_note": note,
        "chars_in": len(page),
        "paragraphs": paragraphs,
        "apparatus_chars": sum(map(len, apparatus)),
        "duplicate_paragraphs": 0,
        "dropped": "",
    }


def document_table(doc_id, url, title, text):
    """One document as a table of DOCS_SCHEMA, written as a row group of its own (readers stream them)."""
    return pa.table(
        {"id": [doc_id], "url": [url], "title": [title], "text": [text], "chars": [len(text)]}, schema=DOCS_SCHEMA
    )


def write_documents(records, raw, docs, params):
    """Clean the pages of `records` in `raw` into the table `docs`, one row group per document (readers
    stream them); the report, a row per page."""
    deduplicator = Deduplicator(params.dedup_min_chars) if params.dedup else None
    report = []
    with atomic_path(docs) as tmp, pq.ParquetWriter(tmp, DOCS_SCHEMA) as writer:
        pages = ordered_map(functools.partial(clean_page, raw=Path(raw), params=params), records, len(records))
        for doc in progress(pages, len(records), "clean: documents"):
            if deduplicator:
                deduplicator.filter(doc)
            text = "\n".join(doc.pop("paragraphs")) if not doc["dropped"] else ""
            doc.update(chars=len(text), n_paragraphs=text.count("\n") + 1 if text else 0)
            if not doc["dropped"]:
                writer.write_table(document_table(doc["id"], doc["url"], doc["title"], text))
            report.append(doc)
    return pd.DataFrame(report)


REPORT_COLUMNS = [
    "id",
    "url",
    "title",
    "declared_encoding",
    "encoding",
    "encoding_note",
    "chars_in",
    "chars",
    "n_paragraphs",
    "apparatus_chars",
    "duplicate_paragraphs",
    "dropped",
]


def stored_pages(raw):
    """The manifest records in `raw` of the pages stored there (a record without a file failed)."""
    manifest = Path(raw) / MANIFEST
    with reading(manifest, "the fetch manifest"):
        records = [record for record in read_json(manifest) if record["file"]]
    if not records:
        raise StageError(f"{manifest} lists no fetched page")
    return records


def clean_metrics(report, drop_apparatus):
    """The counts of a cleaning report, for metrics/clean.json."""
    kept = report[report["dropped"] == ""]
    return {
        "documents": len(kept),
        "chars_in": int(report["chars_in"].sum()),
        "chars_out": int(kept["chars"].sum()),
        "paragraphs": int(report["n_paragraphs"].sum()),
        "encodings_not_as_declared": int(((report["encoding_note"] != "") & report["declared_encoding"].notna()).sum()),
        "apparatus_chars_found": int(report["apparatus_chars"].sum()),
        "apparatus_chars_kept": 0 if drop_apparatus else int(report["apparatus_chars"].sum()),
        "dropped_duplicate_documents": int((report["dropped"] != "").sum()),
        "dropped_duplicate_paragraphs": int(report["duplicate_paragraphs"].sum()),
    }
