"""Pages as lxml trees, parsed as trafilatura would parse them, and what libxml2's limits cut off:
past 256 nested elements (or a text of 10 MB) it stops, keeps what it has read and raises nothing."""

import re
from typing import NamedTuple

import lxml.html
from lxml import etree

# Control characters: lxml refuses them in the trees trafilatura builds (trafilatura strips them too).
INVALID_XML_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Cut(NamedTuple):
    limit: str  # libxml2's words: "Excessive depth in document: 256"
    lost: int  # characters of the page past the point where parsing stopped
    chars: int  # characters of the page


def _parse(page):
    """(tree, the limit libxml2 stopped at, or None)."""
    parser = lxml.html.HTMLParser(collect_ids=False, default_doctype=False, remove_comments=True, remove_pis=True)
    try:
        tree = lxml.html.document_fromstring(page, parser=parser)
    except etree.ParserError:  # "Document is empty": nothing but white space and comments
        tree = lxml.html.document_fromstring("<html><body></body></html>")
    limits = [
        error.message.split(",")[0].strip()
        for error in parser.error_log  # the words before "use XML_PARSE_HUGE"
        if error.type == etree.ErrorTypes.ERR_RESOURCE_LIMIT
    ]
    return tree, limits[0] if limits else None


def parse_page(page):
    """(the page's tree, a Cut when libxml2 stopped at one of its limits, else None)."""
    page = INVALID_XML_CHARS.sub("", page)
    tree, limit = _parse(page)
    if limit is None:
        return tree, None
    # Where it stopped: the shortest prefix whose parse stops too (libxml2's column numbers are not
    # character offsets). No parse reads past that point: the search costs a few dozen such reads.
    low, high = 0, len(page)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if _parse(page[:middle])[1] else (middle + 1, high)
    return tree, Cut(limit, len(page) - low, len(page))
