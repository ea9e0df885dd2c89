"""The presets' texts on the real files of ../shared: the base of configs/presets/ruslit-base.yaml
leaves out every edition of the seven works the pages hold and every text that
configs/presets/style-groups.yaml scores, by title and by content."""

import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, SHARED
from tolstoy.config.params import read_params
from tolstoy.data.charset import decode_page
from tolstoy.data.sources import expand_sources
from tolstoy.data.words import words

pytestmark = [
    pytest.mark.slow,  # reads some 60 MB of text
    pytest.mark.skipif(not (SHARED / "corpus/ruslit").is_dir(), reason="needs ../shared/corpus/ruslit"),
]
MIRROR = SHARED / "mirror"
SHINGLE = 8  # words: a run this long shared by two texts is a quotation or the same text, not chance
EVERY = 16  # of a text's shingles, every 16th is looked up


def preset_sources(name, section, key):
    """The files a preset's list of sources names (patterns expanded), as the stages read them from the repository."""
    values = yaml.safe_load((ROOT / "configs/presets" / name).read_text(encoding="utf-8"))[section][key]
    lists = values.values() if isinstance(values, dict) else [values]
    return [ROOT / path for sources in lists for path in expand_sources([str(ROOT / s) for s in sources])]


def pages():
    """{title of the work: text} of the seven pages of params.yaml, from the mirror."""
    texts = {}
    for url in read_params(ROOT / "params.yaml")["fetch"]["urls"]:
        page = decode_page((MIRROR / url.split("://", 1)[1]).read_bytes(), source=url).text
        title = re.search(r"<title>[^.]*\.\s*(.*?) - Классика</title>", page).group(1)
        texts[title] = re.sub(r"<[^>]+>", " ", page)
    return texts


def shingles(text, every=1):
    tokens = words(text)
    return {hash(tuple(tokens[i : i + SHINGLE])) for i in range(0, len(tokens) - SHINGLE + 1, every)}


def shared_share(text, shingle_set):
    """The share of the text's sampled shingles that are in shingle_set."""
    sample = shingles(text, EVERY)
    return len(sample & shingle_set) / len(sample)


def read(path):
    return Path(path).read_text(encoding="utf-8")


def title_words(title):
    """A title as its words, lowercase: the same for a page's <title> and a file's name."""
    return " ".join(words(title))


@pytest.fixture(scope="module")
def corpus():
    if not MIRROR.is_dir():
        pytest.skip("needs ../shared/mirror")
    base = preset_sources("ruslit-base.yaml", "fetch", "urls")
    groups = preset_sources("style-groups.yaml", "groups", "sources")
    works = pages()
    return base, groups, works, {title_words(title) for title in works}


def test_the_base_leaves_out_the_seven_works_in_every_edition(corpus):
    base, _, works, titles = corpus
    editions = [p for p in (SHARED / "corpus/ruslit").rglob("*.txt") if title_words(p.stem) in titles]
    assert len(editions) >= 7  # ruslit holds its own copies of them (Анна Каренина, Война и мир. Том 1-4, ...)
    assert [p for p in base if title_words(p.stem) in titles] == []
    page_shingles = set().union(*(shingles(text) for text in works.values()))
    assert min(shared_share(read(p), page_shingles) for p in editions) > 0.5  # what the check finds in a copy
    overlaps = {p.name: shared_share(read(p), page_shingles) for p in base}
    assert max(overlaps.values()) < 0.02, sorted(overlaps.items(), key=lambda item: -item[1])[:3]


def test_the_base_leaves_out_every_text_the_groups_score(corpus):
    base, groups, _, titles = corpus
    assert groups and set(base).isdisjoint(groups)
    # the scored works are unseen by the fine-tuned model too
    assert [p for p in groups if title_words(p.stem) in titles] == []
    base_shingles = set().union(*(shingles(read(p)) for p in base))
    overlaps = {p.name: shared_share(read(p), base_shingles) for p in groups}
    assert max(overlaps.values()) < 0.02, sorted(overlaps.items(), key=lambda item: -item[1])[:3]
