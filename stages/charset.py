"""Decoding fetched pages: the declared charset when it is true, otherwise the next candidate."""
import codecs
import re

import charset_normalizer


def charset_of(content_type):
    """The charset parameter of a Content-Type value, lower-cased, or None."""
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type or "", re.I)
    return match.group(1).lower() if match else None


def _looks_like_mojibake(text):
    # Cyrillic bytes decoded as latin-1/cp1252 come out as letters of the À..ÿ block.
    letters = sum(c.isalpha() for c in text[:200_000]) or 1
    return sum("\u00c0" <= c <= "\u00ff" for c in text[:200_000]) / letters > 0.01


def _charset_candidates(body, http_charset):
    yield http_charset
    meta = re.search(rb"<meta[^>]+charset=[\"']?([\w.:-]+)", body[:4096], re.I)
    yield meta.group(1).decode("ascii").lower() if meta else None
    detected = charset_normalizer.from_bytes(body[:200_000]).best()  # slow: only when the declared ones fail
    yield detected.encoding if detected else None
    yield "utf-8"


def decode_page(body, http_charset=None):
    """Decode page bytes: HTTP charset, then <meta> charset, then detection. Returns (text, encoding).

    A charset that fails strict decoding, or that turns Cyrillic into Latin-1 mojibake, is a lie
    and the next source is tried.
    """
    for encoding in filter(None, _charset_candidates(body, http_charset)):
        try:
            text = body.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
        if not _looks_like_mojibake(text):
            return text, codecs.lookup(encoding).name
    return body.decode("utf-8", errors="replace"), "utf-8"
