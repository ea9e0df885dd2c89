"""Decoding fetched pages: the declared charset when its text reads as Russian, otherwise the one
usual Cyrillic encoding whose text does."""

import codecs
import re
import string
import unicodedata
from typing import NamedTuple

import charset_normalizer

from tolstoy import StageError

CYRILLIC_ENCODINGS = ("utf-8", "cp1251", "koi8-r", "cp866", "iso8859-5", "mac-cyrillic")
BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
PLAUSIBLE = 0.9  # share of the non-ASCII word characters that form well-cased Russian words
MIN_JUDGED_CHARS = 200  # fewer non-ASCII word characters than this: nothing to judge by
SAMPLE_CHARS = 300_000
DETECTED_BYTES = 200_000  # what charset_normalizer reads
NUL_SHARE = 0.001  # more NUL bytes than this: not text (images and archives have one in a few hundred; text none)
UPPER, LOWER = "А-ЯЁІѢѲѴ", "а-яёіѣѳѵ"  # the Russian alphabet, pre-reform letters included
PART = rf"(?:[{UPPER}]?[{LOWER}]+|[{UPPER}]+|[A-Za-z]+|\d+)"
RUSSIAN_WORD = re.compile(rf"{PART}(?:[-'’]{PART})*")
EDGE_PUNCTUATION = string.punctuation + "«»„“”‘’‚‹›—–…•·№§°"
MARKUP = re.compile(r"<[^<>]*>|&#?\w+;")  # markup and character references; a `<` ends an unclosed tag


class Decoding(NamedTuple):
    text: str
    encoding: str  # codec name used
    declared: str | None  # the HTTP charset, else the <meta> one, else None
    note: str  # why the declared charset was not used; '' when it was
    unfinished: int = 0  # bytes at the end that begin a character and do not finish it: the page is cut short


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


def _decode(body, encoding, errors="strict"):
    """(text, the bytes of an unfinished last character, left out) of `body` in `encoding`, or None
    when it does not decode."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors)
        return decoder.decode(body), len(decoder.getstate()[0])  # not final: an unfinished character stays behind
    except (LookupError, UnicodeDecodeError):
        return None


def _is_wide(charset):
    """UTF-16 and UTF-32 text holds NUL bytes; text in any other encoding does not."""
    try:
        return codecs.lookup(charset).name.startswith(("utf-16", "utf-32"))
    except LookupError:
        return False


def _detected(body):
    return charset_normalizer.from_bytes(body[:DETECTED_BYTES]).best()


def _is_binary(body, declared):
    """NUL bytes throughout, and neither UTF-16 nor UTF-32 declared or detected."""
    if body.count(0) <= NUL_SHARE * len(body) or (declared and _is_wide(declared)):
        return False
    detected = _detected(body)
    return not (detected and _is_wide(detected.encoding))


def _by_evidence(body, declared, source):
    decodings = {encoding: _decode(body, encoding) for encoding in CYRILLIC_ENCODINGS}
    scored = sorted(
        ((russian_plausibility(decoded[0]), encoding) for encoding, decoded in decodings.items() if decoded),
        key=lambda pair: -(pair[0] or 0),
    )
    plausible = [(score, encoding) for score, encoding in scored if score is not None and score >= PLAUSIBLE]
    if not plausible:
        return None
    best_score, best = plausible[0]
    rivals = [
        f"{encoding} ({score:.1%})" for score, encoding in plausible[1:] if decodings[encoding] != decodings[best]
    ]
    if rivals:
        raise StageError(
            f"{source}: cannot tell its encoding: {best} ({best_score:.1%} of words read as Russian) and "
            f"{', '.join(rivals)} are all plausible (declared: {declared or 'nothing'})"
        )
    return decodings[best], best, best_score


def decode_page(body, http_charset=None, source="page"):
    """Decode page bytes: a byte order mark, else the declared charset (HTTP, then <meta>) when its
    text reads as Russian, else the usual Cyrillic encoding whose text does. A last character cut
    short is left out and counted (Decoding.unfinished).

    Raises StageError naming `source` when two different decodings are plausible Russian, or when
    the page is not text (an image, an archive)."""
    declared = http_charset or meta_charset(body)
    for bom, encoding in BOMS:
        if body.startswith(bom):  # the mark settles the encoding: bytes that do not decode become U+FFFD
            text, unfinished = _decode(body, encoding, "replace")
            return Decoding(text, codecs.lookup(encoding).name, declared, "", unfinished)
    if _is_binary(body, declared):
        raise StageError(
            f"{source}: is not text: {body.count(0)} of its {len(body)} bytes are NUL, "
            f"as in an image or an archive (declared: {declared or 'nothing'})"
        )
    decoded = _decode(body, declared) if declared else None
    why = f"declared {declared} does not decode" if declared else "no charset declared"
    if decoded:
        declared_score = russian_plausibility(decoded[0])
        if declared_score is None or declared_score >= PLAUSIBLE:
            return Decoding(decoded[0], codecs.lookup(declared).name, declared, "", decoded[1])
        why = f"declared {declared} gives {declared_score:.1%} Russian words"
    found = _by_evidence(body, declared, source)
    if found:
        (text, unfinished), encoding, score = found
        note = f"{why}; {encoding} gives {score:.1%}"
        return Decoding(text, codecs.lookup(encoding).name, declared, note, unfinished)
    if decoded:  # not Russian in any encoding
        return Decoding(decoded[0], codecs.lookup(declared).name, declared, "", decoded[1])
    detected = _detected(body)
    encoding = detected.encoding if detected else "utf-8"
    text, unfinished = _decode(body, encoding, "replace")
    return Decoding(text, codecs.lookup(encoding).name, declared, f"{why}; detected as {encoding}", unfinished)
