"""What pages lay out around and inside the work: hard-wrapped text (<pre> blocks, plain-text
pages) joined into paragraphs, and the editorial apparatus (site title lines, sources, notes)."""
import html
import re

PRE = re.compile(r"<pre\b[^>]*>(.*?)</pre\s*>", re.I | re.S)
HTML_TAG = re.compile(r"<(?:html|head|body|p|div|pre|br|table|h\d)\b", re.I)
MARKUP = re.compile(r"<[^>]*>")
WORD_HYPHEN = re.compile(r"\w-$")  # "когда-" + "то": a hyphenated word wrapped at its hyphen
DASH_START = re.compile(r"[-–—]+\s")
SENTENCE_END = re.compile(r"[.!?…:;»\"”)]$")
MAX_WRAP_COLUMNS = 160  # longer lines are not hard-wrapped text
CENTERED = 10  # columns past the paragraph indent: headings, epigraphs and verse, one line each

SEPARATOR = re.compile(r"[-_=~*]{5,}")
NOTE_LEAD = r"(?:[-*•]\s+|\d{1,3}[.)]\s+)?"  # a list item's bullet or number
EDITORIAL = re.compile(
    NOTE_LEAD + r"(?:[↑^]\s*)?(?:Примечани[ея](?: редакции| автора| переводчика)?|Источник|Текст издания|Издание|Изд\.|OCR|"
    r"Spellcheck|Сканирование|Вычитка|Распознавание|Подготовка текста|Оригинал здесь|Последнее изменение|Категории?)"
    r"\s*(?:[:.—-]|$)", re.I)
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
    paragraphs, current, previous = [], "", ""
    for line in lines:
        line = line.rstrip()
        if line.strip():
            if current and _starts_paragraph(line, previous, margin, width):
                paragraphs.append(current)
                current = ""
            current += line.strip() if not current or WORD_HYPHEN.search(current) else " " + line.strip()
        previous = line
    return paragraphs + [current] if current else paragraphs


def unwrap(page):
    """The page with every <pre> block (a plain-text page is one) rewritten as <p> paragraphs."""
    if not HTML_TAG.search(page):
        page = f"<html><body><pre>{html.escape(page, quote=False)}</pre></body></html>"
    return PRE.sub(lambda block: "".join(f"<p>{p}</p>\n" for p in join_wrapped(block.group(1))), page)


def is_apparatus(paragraph, position):
    """Editorial text around the work: separator rules, source/OCR/notes lines, footnotes with a
    back-link, and the site's 'Author Name. Title' line among the first paragraphs."""
    if SEPARATOR.fullmatch(paragraph):
        return True
    if len(paragraph) <= EDITORIAL_MAX_CHARS and (EDITORIAL.match(paragraph) or FOOTNOTE.match(paragraph)):
        return True
    return position < TITLE_LINES and bool(SITE_TITLE.fullmatch(paragraph))
