"""What pages lay out around and inside the work: hard-wrapped text (<pre> blocks, plain-text
pages) joined into paragraphs, and the editorial apparatus (site title lines, sources, notes)."""

import html
import re

# Tags end at a `<` as well as a `>`: a tag left unclosed is given up at the next one, so that
# each character is read a bounded number of times, whatever the page.
PRE_TAG = re.compile(r"<(/?)pre\b[^<>]*>", re.I)
HTML_TAG = re.compile(r"<(?:html|head|body|p|div|pre|br|table|h\d)\b", re.I)
MARKUP = re.compile(r"<[^<>]*>")
WORD_HYPHEN = re.compile(r"\w-$")  # "когда-" + "то": a hyphenated word wrapped at its hyphen
DASH_START = re.compile(r"[-–—]+\s")
SENTENCE_END = re.compile(r"[.!?…:;»\"”)]$")
MAX_WRAP_COLUMNS = 160  # longer lines are not hard-wrapped text
CENTERED = 10  # columns past the paragraph indent: headings, epigraphs and verse, one line each

SEPARATOR = re.compile(r"[-_=~*]{5,}")
NOTE_LEAD = r"(?:[-*•]\s+|\d{1,3}[.)]\s+)?"  # a list item's bullet or number
EDITORIAL = re.compile(
    NOTE_LEAD
    + r"(?:[↑^]\s*)?(?:Примечани[ея](?: редакции| автора| переводчика)?|Источник|Текст издания|Издание|Изд\.|OCR|"
    r"Spellcheck|Сканирование|Вычитка|Распознавание|Подготовка текста|Оригинал здесь|Последнее изменение|Категории?)"
    r"\s*(?:[:.—-]|$)",
    re.I,
)
FOOTNOTE = re.compile(NOTE_LEAD + r"[↑^]\s")  # a note's back-link to its marker
SITE_TITLE = re.compile(r"(?:[А-ЯЁ][а-яё]+\s){1,3}[А-ЯЁ][а-яё]+\.\s+\S.{0,80}")  # "Антон Павлович Чехов. Ванька"
EDITORIAL_MAX_CHARS = 300
TITLE_LINES = 3  # a site title line is among the first paragraphs


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _starts_paragraph(line, previous, margin, width):
    if not previous.strip():
        return True  # a blank line ends a paragraph
    if _indent(line) > margin or _indent(previous) >= margin + CENTERED:
        return True  # an indented first line; a centred line stands alone
    text_before = MARKUP.sub("", previous).strip()
    if DASH_START.match(line.lstrip()) and SENTENCE_END.search(text_before):
        return True  # a line of dialogue after a finished sentence
    return len(text_before) < width // 2  # a wrapped line fills the width: a short one ended its paragraph


def join_wrapped(text):
    """Paragraphs of hard-wrapped text, each one line: wrapped lines joined, paragraphs split at
    blank lines, indented first lines, centred lines, dialogue dashes and short last lines."""
    lines = text.expandtabs(8).split("\n")
    filled = [line.rstrip() for line in lines if line.strip()]
    if not filled:
        return []
    margin = min(map(_indent, filled))
    width = sorted(map(len, filled))[int(0.9 * (len(filled) - 1))]
    if width > MAX_WRAP_COLUMNS:  # not hard-wrapped: a line per paragraph
        return [line.strip() for line in filled]
    paragraphs, current, previous = [], [], ""  # current: the lines of the paragraph being joined
    for line in lines:
        line = line.rstrip()
        if line.strip():
            if current and _starts_paragraph(line, previous, margin, width):
                paragraphs.append("".join(current))
                current = []
            current.append(line.strip() if not current or WORD_HYPHEN.search(current[-1]) else " " + line.strip())
        previous = line
    return paragraphs + ["".join(current)] if current else paragraphs


def as_paragraphs(text):
    return "".join(f"<p>{p}</p>\n" for p in join_wrapped(text))


def unwrap(page):
    """The page with every <pre> block (a plain-text page is one) rewritten as <p> paragraphs. A
    block runs from its opening tag to the first closing tag after it; an opening tag with none
    after it is left as it is."""
    if not HTML_TAG.search(page):
        return f"<html><body>{as_paragraphs(html.escape(page, quote=False))}</body></html>"
    parts, done = [], 0
    tags = PRE_TAG.finditer(page)
    for opening in tags:
        if opening.group(1):
            continue  # a closing tag with no block open
        closing = next((tag for tag in tags if tag.group(1)), None)  # opening tags inside the block are its text
        if closing is None:
            break
        parts += [page[done : opening.start()], as_paragraphs(page[opening.end() : closing.start()])]
        done = closing.end()
    return "".join(parts) + page[done:]


def is_apparatus(paragraph, position):
    """Editorial text around the work: separator rules, source/OCR/notes lines, footnotes with a
    back-link, and the site's 'Author Name. Title' line among the first paragraphs."""
    if SEPARATOR.fullmatch(paragraph):
        return True
    if len(paragraph) <= EDITORIAL_MAX_CHARS and (EDITORIAL.match(paragraph) or FOOTNOTE.match(paragraph)):
        return True
    return position < TITLE_LINES and bool(SITE_TITLE.fullmatch(paragraph))
