"""Pages in three site layouts, each with its site's chrome around the work:
- az.lib.ru: windows-1251 HTML, unclosed <dd> paragraphs, <h3> chapter headings, navigation,
  ads, metadata, rating form, hidden comments, footer;
- Wikisource-like: UTF-8, <p> paragraphs, footnote markers with a list of notes, header table,
  categories;
- lib.ru: KOI8-R, the whole work in one <pre> hard-wrapped at 72 columns, paragraphs marked by an
  indented first line, centred headings, a site title line and source/OCR lines.
bench/clean_fidelity.py renders corpus texts with these builders; the tests build their local
sites with them."""

import html
import random
import textwrap

SENTENCES = [
    "Все счастливые семьи похожи друг на друга, каждая несчастливая семья несчастлива по-своему.",
    "Все смешалось в доме Облонских.",
    "Пьер закашлялся и покраснел, не зная, что ответить.",
    "Наташа вбежала в гостиную и остановилась у окна.",
    "Князь Андрей смотрел на высокое небо, по которому тихо ползли серые облака.",
    "Старый граф сидел в кресле и слушал, как играют на клавикордах.",
    "В деревне было тихо, только где-то далеко лаяли собаки.",
    "Он вышел на крыльцо, вдохнул морозный воздух и улыбнулся.",
    "- Ну что же, - сказала она, - поедем завтра утром.",
    "Лошади шли шагом по мокрой дороге, и колеса вязли в грязи.",
    "Нехлюдов долго не мог заснуть и думал о том, что случилось днем.",
    "Солнце уже поднялось над лесом, и роса блестела на траве.",
    "Мужики косили луг, и свежий запах сена доносился до дома.",
    "Анна сидела в вагоне и читала английский роман, но ей было скучно.",
    "- Отчего же вы не хотите? - спросил он тихо.",
    "Кити покраснела и опустила глаза.",
    "Левин шел по полю и думал о своем хозяйстве.",
    "Французы вошли в Москву, и город горел несколько дней.",
    "Денисов закурил трубку и весело посмотрел на Ростова.",
    "Ей было жалко и его, и себя, и всех людей на свете.",
    "Вечером все собрались за чайным столом, и разговор сделался общим.",
    "Он понял, что жизнь не кончена и что все еще впереди.",
    "Maman, - сказала Соня по-французски, - c'est charmant.",
    "Где-то ударили в колокол, и звон поплыл над рекой.",
]

CHROME_MARKERS = [
    "Реклама",
    "Книги почтой",
    "Оценить",
    "Copyright",
    "Техподдержка",
    "Комментарии",
    "Последние комментарии",
]


WORDS = sorted({w.strip(".,-?") for s in SENTENCES for w in s.split()} - {""})


def paragraphs(seed, n):
    """n paragraphs of 15-40 words drawn from the sentences' vocabulary (distinct, as prose is)."""
    rng = random.Random(seed)
    result = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(15, 40))
        result.append(" ".join(words).capitalize() + ".")
    return result


def work(seed, chapters=3, per_chapter=100):
    """(heading, [paragraphs]) per chapter."""
    return [(f"Глава {c + 1}", paragraphs(f"{seed}-{c}", per_chapter)) for c in range(chapters)]


def page_html(title, chapters, charset_meta="windows-1251"):
    body = []
    for heading, paras in chapters:
        body.append(f"<center><h3>{heading}</h3></center>")
        body += [f"<dd>&nbsp;&nbsp;{p}" for p in paras]
    return f"""<html>
<head>
<title>Толстой Лев Николаевич. {title} - Классика</title>
<meta http-equiv="Content-Type" content="text/html; charset={charset_meta}">
<script>var _counter = new Image();</script>
</head>
<body bgcolor="#E9E9E9">
<center><h2><small><a href=/>Классика</a>: [<a href=/type/>Регистрация</a>] [<a href=/rating/>Рейтинги</a>]</small></h2></center>
<table width=100% bgcolor=#C0C0C0><tr><td><small>Реклама: <a href="/ads/click?id=17">Книги почтой</a></small></td></tr></table>
<center><h2>Толстой Лев Николаевич<br><font size=+1>{title}</font></h2></center>
<small><ul><li><a href="/comment/x">Комментарии: 3</a></li><li>Год: 1860</li></ul></small>
<hr size=2 noshade>
<div align=justify>
{chr(10).join(body)}
</div>
<hr size=2 noshade>
<div align=right><small><a href="/comment/x">Оставить комментарий</a></small></div>
<form action="/cgi-bin/votecounter" method=POST><small>Ваша оценка: <select name=BALL><option value=10>шедевр</option></select>
<input type=submit value="Оценить"></small></form>
<div id=cm style="display:none"><small>Последние комментарии: отличная книга.</small></div>
<center><small>Москва, Классика. <a href=/copyright.shtml>Copyright</a> 2004-2024.<br>Техподдержка: support</small></center>
</body>
</html>"""


def write_site(root, n_pages=3, chapters=3, per_chapter=100):
    """Write fixture pages under root/t/tolstoj/; returns [(relative url path, chapters)]."""
    site = root / "t" / "tolstoj"
    site.mkdir(parents=True, exist_ok=True)
    pages = []
    for i in range(n_pages):
        content = work(i, chapters, per_chapter)
        name = f"text_{i:04d}.shtml"
        (site / name).write_bytes(page_html(f"Том {i + 1}", content).encode("cp1251"))
        pages.append((f"t/tolstoj/{name}", content))
    return pages


def page_wikisource(title, chapters, note_every=25):
    """UTF-8 Wikisource-like page; a footnote marker after every note_every-th paragraph."""
    body, notes = [], []
    for heading, paras in chapters:
        body.append(f'<h2><span class="mw-headline">{html.escape(heading)}</span></h2>')
        for i, paragraph in enumerate(paras, 1):
            marker = ""
            if i % note_every == 0:
                notes.append(f"Примечание редакции: в первом издании абзац {i} читался иначе.")
                n = len(notes)
                marker = f'<sup id="cite_ref-{n}" class="reference"><a href="#cite_note-{n}">[{n}]</a></sup>'
            body.append(f"<p>{html.escape(paragraph, quote=False)}{marker}</p>")
    note_items = "".join(
        f'<li id="cite_note-{n}"><a href="#cite_ref-{n}">↑</a> <span class="reference-text">{note}</span></li>'
        for n, note in enumerate(notes, 1)
    )
    return f"""<!DOCTYPE html>
<html lang="ru"><head><meta charset="UTF-8"><title>{html.escape(title)} — Викитека</title></head>
<body>
<div id="mw-navigation"><h2>Навигация</h2><ul><li><a href="/wiki/Main">Заглавная страница</a></li><li><a href="/wiki/Random">Случайная страница</a></li></ul></div>
<div id="content"><h1 id="firstHeading">{html.escape(title)}</h1>
<div id="bodyContent"><div id="siteSub">Материал из Викитеки — свободной библиотеки</div>
<div class="mw-parser-output">
<table class="headertemplate"><tr><td><a href="/wiki/prev">← Предыдущая</a></td><td><b>{html.escape(title)}</b><br>Источник: Собрание сочинений</td><td><a href="/wiki/next">Следующая →</a></td></tr></table>
{chr(10).join(body)}
<h2><span class="mw-headline">Примечания</span></h2>
<ol class="references">{note_items}</ol>
</div></div>
<div id="catlinks" class="catlinks"><a href="/wiki/Categories">Категории</a>: <a href="/wiki/c1">Литература 1886 года</a> | <a href="/wiki/c2">Рассказы</a></div>
</div>
<div id="footer"><ul><li>Текст доступен по лицензии Creative Commons Attribution-ShareAlike.</li><li><a href="/privacy">Политика конфиденциальности</a></li></ul></div>
</body></html>"""


def wrapped_text(chapters, width=72, indent=5):
    """The work as lib.ru lays it out: paragraphs hard-wrapped at width with an indented first line,
    headings centred between blank lines."""
    lines = []
    for heading, paras in chapters:
        lines += ["", heading.center(width).rstrip(), ""]
        for paragraph in paras:
            lines += textwrap.wrap(paragraph, width, initial_indent=" " * indent, break_long_words=False)
    return "\n".join(lines)


def page_libru(title, author, chapters):
    """KOI8-R lib.ru page: site title line, source and OCR lines, the work in one <pre>."""
    work = html.escape(wrapped_text(chapters), quote=False)
    return f"""<html><head><title>Lib.ru/Классика: {html.escape(author)}. {html.escape(title)}</title></head>
<body>
<table width=100%><tr><td><a href=/>Lib.Ru</a>: <a href=/PROZA/>Проза</a> | <a href=/POEZIQ/>Поэзия</a> | <a href=/Forum/>Форум</a> | Поиск</td></tr></table>
<h2>{html.escape(author)}. {html.escape(title)}</h2>
<pre>
     {html.escape(author)}. {html.escape(title)}
---------------------------------------------------------------
     Источник: Полное собрание сочинений. Москва, 1980.
     OCR: Библиотека Мошкова
---------------------------------------------------------------
{work}
</pre>
<hr noshade><small>Last-modified: Mon, 12 Jan 2004 10:00:00 GMT</small>
<form action=/cgi-bin/ocenka><small>Оценка: <select name=o><option>10</option></select><input type=submit value="Оценить"></small></form>
</body></html>"""
