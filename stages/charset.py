"""Decoding fetched pages: the declared charset when its text reads as Russian, otherwise the one
usual Cyrillic encoding whose text does."""
import codecs
import re
import string
import unicodedata
from typing import NamedTuple

import charset_normalizer

from stages.common import StageError

CYRILLIC_ENCODINGS = ("utf-8", "cp1251", "koi8-r", "cp866", "iso8859-5", "mac-cyrillic")
BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
PLAUSIBLE = 0.9  # share of the non-ASCII word characters that form well-cased Russian words
MIN_JUDGED_CHARS = 200  # fewer non-ASCII word characters than this: nothing to judge by
SAMPLE_CHARS = 300_000
UPPER, LOWER = "А-ЯЁІѢѲѴ", "а-яёіѣѳѵ"  # the Russian alphabet, pre-reform letters included
PART = rf"(?:[{UPPER}]?[{LOWER}]+|[{UPPER}]+|[A-Za-z]+|\d+)"
RUSSIAN_WORD = re.compile(rf"{PART}(?:[-'’]{PART})*")
EDGE_PUNCTUATION = string.punctuation + "«»„“”‘’‚‹›—–…•·№§°"
MARKUP = re.compile(r"<[^>]*>|&#?\w+;")  # markup and character references


class Decoding(NamedTuple):
    text: str
    encoding: str  # codec name used
    declared: str | None  # the HTTP charset, else the <meta> one, else None
    note: str  # why the declared charset was not used; '' when it was


def charset_of(content_type):
    """The charset parameter of a Content-Type value, lower-cased, or None."""
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type or "", re.I)
    return match.group(1).lower() if match else None


def meta_charset(body):
    match = re.search(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", body[:4096], re.I)
    return match.group(1).decode("ascii").lower() if match else None


def russian_plausibility(text):
    """Share of the characters of non-ASCII words that are well-cased Russian words, or None when
    the text has too few non-ASCII words to judge.

    Cyrillic decoded with the wrong table gives inverted case (KOI8-R read as cp1251: бОФПО),
    letters outside the Russian alphabet (ѕ, ќ, Ï) or symbols inside words (п▒п╣)."""
    good = total = upper = lower = 0
    for token in MARKUP.sub(" ", text[:SAMPLE_CHARS]).split():
        word = "".join(c for c in token.strip(EDGE_PUNCTUATION) if not unicodedata.combining(c))  # stress marks
        if word.isascii():
            continue
        total += len(word)
        if RUSSIAN_WORD.fullmatch(word):
            good += len(word)
            upper += sum(c.isupper() for c in word)
            lower += sum(c.islower() for c in word)
    if total < MIN_JUDGED_CHARS:
        return None
    return good / total if lower >= upper else 0.0  # lower-case text read with swapped case tables is all capitals


def _decode(body, encoding):
    try:
        return body.decode(encoding)
    except (LookupError, UnicodeDecodeError):
        return None


def _by_evidence(body, declared, source):
    decodings = {encoding: _decode(body, encoding) for encoding in CYRILLIC_ENCODINGS}
    scored = sorted(((russian_plausibility(text), encoding) for encoding, text in decodings.items() if text is not None),
                    key=lambda pair: -(pair[0] or 0))
    plausible = [(score, encoding) for score, encoding in scored if score is not None and score >= PLAUSIBLE]
    if not plausible:
        return None
    best_score, best = plausible[0]
    rivals = [f"{encoding} ({score:.1%})" for score, encoding in plausible[1:] if decodings[encoding] != decodings[best]]
    if rivals:
        raise StageError(f"{source}: cannot tell its encoding: {best} ({best_score:.1%} of words read as Russian) and "
                         f"{', '.join(rivals)} are all plausible (declared: {declared or 'nothing'})")
    return decodings[best], best, best_score


def decode_page(body, http_charset=None, source="page"):
    """Decode page bytes: a byte order mark, else the declared charset (HTTP, then <meta>) when its
    text reads as Russian, else the usual Cyrillic encoding whose text does.

    Raises StageError naming `source` when two different decodings are plausible Russian."""
    declared = http_charset or meta_charset(body)
    for bom, encoding in BOMS:
        if body.startswith(bom):
            return Decoding(body.decode(encoding), codecs.lookup(encoding).name, declared, "")
    text = _decode(body, declared) if declared else None
    why = f"declared {declared} does not decode" if declared else "no charset declared"
    if text is not None:
        declared_score = russian_plausibility(text)
        if declared_score is None or declared_score >= PLAUSIBLE:
            return Decoding(text, codecs.lookup(declared).name, declared, "")
        why = f"declared {declared} gives {declared_score:.1%} Russian words"
    found = _by_evidence(body, declared, source)
    if found:
        found_text, encoding, score = found
        return Decoding(found_text, codecs.lookup(encoding).name, declared, f"{why}; {encoding} gives {score:.1%}")
    if text is not None:
        return Decoding(text, codecs.lookup(declared).name, declared, "")  # not Russian in any encoding
    detected = charset_normalizer.from_bytes(body[:200_000]).best()
    encoding = detected.encoding if detected else "utf-8"
    return Decoding(body.decode(encoding, errors="replace"), codecs.lookup(encoding).name, declared, f"{why}; detected as {encoding}")
