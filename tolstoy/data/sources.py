"""A list of sources (fetch.urls, groups.sources) as the pages it names: local path patterns expanded,
each page once."""

import glob
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tolstoy import StageError

MANIFEST = "manifest.json"  # the record of a directory of fetched sources, beside them


def _is_local_pattern(url):
    return not re.match(r"\w+://", url) and bool(re.search(r"[*?[]", url))


def expand_sources(urls, key="fetch.urls"):
    """The sources of `key` (fetch.urls) with every local path pattern (*, ?, [...]) replaced by the files
    it matches, sorted."""
    sources = []
    for url in urls:
        matches = sorted(glob.glob(url)) if _is_local_pattern(url) else [url]
        if not matches:
            raise StageError(f"params.yaml: {key}: {url} matches no file")
        sources += matches
    return sources


def local_path(source):
    """The path a local source (a path, or a file:// URL) names."""
    if not source.startswith("file:"):
        return Path(source)
    try:
        return Path(unquote(urlsplit(source).path))
    except ValueError:  # "file://[x/" names no file: read as a path, it is not found
        return Path(source)


def _source_key(source):
    """What a source names: the URL itself, or the file a local path or file:// URL points to."""
    if re.match(r"(https?)://", source):
        return source
    return str(local_path(source).resolve())


def check_sources(urls, key="fetch.urls"):
    """Every pattern matches a file and no page is listed twice (directly, or through a pattern)."""
    seen, twice = {}, []
    for source in expand_sources(urls, key):
        page = _source_key(source)
        if page in seen:
            twice.append(source if seen[page] == source else f"{seen[page]} and {source}")
        seen.setdefault(page, source)
    if twice:
        raise StageError(f"params.yaml: {key} lists the same page twice: {'; '.join(dict.fromkeys(twice))}")
