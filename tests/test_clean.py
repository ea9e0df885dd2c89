import codecs
import logging
import re
import time
import unicodedata
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bench import sites
from bench.workspace import stage_command
from stages import clean
from tests.helpers import call_stage, python_env, run, tiny_params, write_params
from tolstoy import StageError
from tolstoy.data.charset import decode_page
from tolstoy.data.layouts import join_wrapped, unwrap
from tolstoy.files import read_json, write_json

RAW = Path("data/raw")  # as dvc.yaml's clean stage reads and writes, from the project
DOCS = Path("data/clean/docs.parquet")
CLEAN_REPORT = Path("metrics/clean_documents.csv")
CLEAN_METRICS = Path("metrics/clean.json")


def write_raw(pages, declared="windows-1251"):
    """Lay out data/raw as the fetch stage would: files plus manifest, with the charset the server declared."""
    manifest = []
    for i, body in enumerate(pages):
        name, url = f"page-{i}", f"http://az.lib.ru/p{i}"
        (RAW).mkdir(parents=True, exist_ok=True)
        (RAW / name).write_bytes(body)
        content_type = f"text/html; charset={declared}" if declared else "text/html"
        manifest.append({"url": url, "file": name, "content_type": content_type, "error": None})
    write_json(RAW / "manifest.json", manifest)


def clean_params(**overrides):
    params = tiny_params([])["clean"]
    params.update(overrides)
    return params


def run_clean(pages, **overrides):
    write_raw(pages)
    write_params(".", {"clean": clean_params(**overrides)})
    call_stage("clean")
    return pd.read_parquet(DOCS), read_json(CLEAN_METRICS)


@pytest.mark.parametrize("declared", ["windows-1251", None, "utf-8", "iso-8859-1", "no-such-charset"])
def test_windows_1251_decodes_whatever_the_header_says(declared):
    text = "Пьер закашлялся и покраснел. Ёлка, «кавычки» — тире."
    body = sites.page_html("Том", [("Глава 1", [text])]).encode("cp1251")
    page = decode_page(body, declared)
    assert text in page.text and page.encoding == "cp1251"


def test_detection_without_any_declaration():
    body = ("<html><body>" + sites.SENTENCES[0] * 20 + "</body></html>").encode("cp1251")
    assert sites.SENTENCES[0] in decode_page(body, None).text


def test_utf8_page_with_utf8_header():
    body = sites.page_html("Том", [("Глава 1", ["Война и мир"])], charset_meta="utf-8").encode("utf-8")
    assert "Война и мир" in decode_page(body, "utf-8").text


def test_keeps_every_heading_and_paragraph_of_a_long_page_and_drops_chrome(project):
    chapters = sites.work("long", chapters=3, per_chapter=150)  # 450 <dd>s: past libxml2's depth limit of 256
    docs, metrics = run_clean([sites.page_html("Том", chapters).encode("cp1251")])
    expected = [line for heading, paras in chapters for line in [heading, *paras]]
    assert docs.loc[0, "text"].split("\n") == expected
    for marker in sites.CHROME_MARKERS:
        assert marker not in docs.loc[0, "text"]
    assert docs.loc[0, "title"] == "Толстой Лев Николаевич. Том - Классика"
    assert metrics["documents"] == 1 and metrics["paragraphs"] == len(expected)
    assert metrics["chars_out"] == len(docs.loc[0, "text"]) == docs.loc[0, "chars"]
    assert metrics["chars_in"] > metrics["chars_out"]


def test_the_outputs_go_where_the_command_line_puts_them(project):
    write_raw([sites.page_html("Том", sites.work("1", chapters=1, per_chapter=20)).encode("cp1251")])
    write_params(".", {"clean": clean_params()})
    clean.main([str(RAW), "elsewhere/docs.parquet", "elsewhere/report.csv", "elsewhere/counts.json"])
    assert len(pd.read_parquet("elsewhere/docs.parquet")) == 1 and read_json("elsewhere/counts.json")["documents"] == 1
    assert pd.read_csv("elsewhere/report.csv")["id"].tolist() == ["page-0"]
    assert not DOCS.exists() and not CLEAN_METRICS.exists() and not CLEAN_REPORT.exists()


def test_each_document_is_a_row_group_of_its_own(project):
    # so that readers (tokenizer, tokenize) hold one document at a time, not the whole corpus
    pages = [
        sites.page_html(f"Том {i}", sites.work(str(i), chapters=1, per_chapter=20)).encode("cp1251") for i in range(3)
    ]
    docs, _ = run_clean(pages)
    assert len(docs) == 3 and pq.ParquetFile(DOCS).num_row_groups == 3


def test_entities_unicode_and_whitespace_are_normalised(project):
    decomposed = unicodedata.normalize("NFD", "Войн\u0430 й мир")
    paragraph = f"&laquo;Да&raquo;,&nbsp;&nbsp;сказал   он &#189; &amp;mdash; {decomposed}"
    docs, _ = run_clean(
        [
            sites.page_html("Том", [("Глава 1", [paragraph] + sites.paragraphs(1, 5))]).encode(
                "cp1251", "xmlcharrefreplace"
            )
        ]
    )
    first = docs.loc[0, "text"].split("\n")[1]
    assert first == "«Да», сказал он ½ — " + unicodedata.normalize("NFC", decomposed)
    assert unicodedata.is_normalized("NFC", docs.loc[0, "text"])


def test_footnote_markers_dropped_only_when_asked(project):
    paras = ["Он сказал это по-французски.[12] И замолчал."] + sites.paragraphs(2, 5)
    page = sites.page_html("Том", [("Глава 1", paras)]).encode("cp1251")
    kept, _ = run_clean([page])
    assert "[12]" in kept.loc[0, "text"]
    dropped, _ = run_clean([page], drop_footnote_markers=True)
    assert "Он сказал это по-французски. И замолчал." in dropped.loc[0, "text"]


def test_duplicates_across_documents_are_dropped_and_reported(project):
    shared = "Этот длинный абзац встречается в двух документах подряд, слово в слово."
    first = sites.page_html("A", [("Глава 1", [shared, "- Да."] + sites.paragraphs("a", 5))]).encode("cp1251")
    second = sites.page_html("B", [("Глава 1", [shared, "- Да."] + sites.paragraphs("b", 5))]).encode("cp1251")
    docs, metrics = run_clean([first, second, first])
    assert len(docs) == 2
    assert shared in docs.loc[0, "text"] and shared not in docs.loc[1, "text"]
    assert "- Да." in docs.loc[1, "text"]  # short lines legitimately repeat
    assert metrics["dropped_duplicate_documents"] == 1 and metrics["dropped_duplicate_paragraphs"] == 1
    report = pd.read_csv(CLEAN_REPORT)
    assert list(report["dropped"].fillna("")) == ["", "", "duplicate document"]
    kept, _ = run_clean([first, second, first], dedup=False)
    assert len(kept) == 3


def test_page_without_text_is_an_error_naming_it(project):
    empty = "<html><head><title>x</title></head><body><form>Оценить</form></body></html>".encode("cp1251")
    with pytest.raises(StageError, match=r"http://az.lib.ru/p1 yields 0 characters"):
        run_clean([sites.page_html("A", sites.work(1)).encode("cp1251"), empty])
    assert not DOCS.exists()


def test_failed_fetches_are_skipped(project):
    write_raw([sites.page_html("A", sites.work(1)).encode("cp1251")])
    manifest = read_json(RAW / "manifest.json") + [{"url": "http://x/", "file": None, "error": "HTTP 404"}]
    write_json(RAW / "manifest.json", manifest)
    write_params(".", {"clean": clean_params()})
    call_stage("clean")
    assert len(pd.read_parquet(DOCS)) == 1


def russian_page(charset_meta=None):
    """An az.lib.ru page (optionally without its <meta> charset) with enough text to judge."""
    page = sites.page_html(
        "Том", sites.work("charset", chapters=1, per_chapter=20) + [("Глава 2", [sites.SENTENCES[0]])]
    )
    return (
        page
        if charset_meta
        else page.replace('<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">', "")
    )


@pytest.mark.parametrize(
    "declared, actual",
    [
        ("windows-1251", "koi8-r"),
        ("koi8-r", "utf-8"),
        ("utf-8", "cp1251"),
        (None, "koi8-r"),
        (None, "cp866"),
        (None, "iso8859-5"),
        (None, "mac-cyrillic"),
        ("windows-1251", "utf-8"),
        ("iso-8859-1", "cp1251"),
    ],
)
def test_a_misdeclared_cyrillic_charset_is_decoded_by_evidence_and_reported(project, caplog, declared, actual):
    write_raw([russian_page().encode(actual, "xmlcharrefreplace")], declared=declared)
    write_params(".", {"clean": clean_params()})
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("clean")
    assert sites.SENTENCES[0] in pd.read_parquet(DOCS).loc[0, "text"]
    report = pd.read_csv(CLEAN_REPORT, keep_default_na=False).loc[0]
    assert report["encoding"] == codecs.lookup(actual).name and report["declared_encoding"] == (declared or "")
    assert report["encoding_note"].startswith(f"declared {declared}" if declared else "no charset declared")
    assert read_json(CLEAN_METRICS)["encodings_not_as_declared"] == (1 if declared else 0)
    [record] = [
        r
        for r in caplog.records
        if r.getMessage().startswith(f"http://az.lib.ru/p0: decoded as {codecs.lookup(actual).name}")
    ]
    assert record.levelno == (
        logging.WARNING if declared else logging.INFO
    )  # a warning when a declaration was overruled


def test_a_true_declaration_is_used_without_a_note(project):
    write_raw(
        [russian_page(charset_meta="koi8-r").replace("windows-1251", "koi8-r").encode("koi8-r", "xmlcharrefreplace")],
        declared=None,
    )
    write_params(".", {"clean": clean_params()})
    call_stage("clean")
    report = pd.read_csv(CLEAN_REPORT, keep_default_na=False).loc[0]
    assert (report["declared_encoding"], report["encoding"], report["encoding_note"]) == ("koi8-r", "koi8-r", "")
    assert read_json(CLEAN_METRICS)["encodings_not_as_declared"] == 0


def test_two_equally_plausible_decodings_are_an_error_naming_the_page(project):
    # Only the letters а-п: cp1251 bytes read as iso8859-5 give р-я, also well-formed Russian words.
    text = " ".join(["Где Полина? Она пела и ела блин, а кабан ел мак."] * 30)
    write_raw([f"<html><body><p>{text}</p></body></html>".encode("cp1251")], declared=None)
    write_params(".", {"clean": clean_params()})
    with pytest.raises(
        StageError, match=r"http://az.lib.ru/p0: cannot tell its encoding: .*(cp1251|iso8859-5).*(cp1251|iso8859-5)"
    ):
        call_stage("clean")
    assert not DOCS.exists()


def chapters_with_dialogue(seed):
    chapters = sites.work(seed, chapters=3, per_chapter=12)
    for _, paras in chapters:
        paras[3:3] = [
            "- Отчего же вы не хотите? - спросил он тихо.",
            "- Ну что же, - сказала она, - поедем завтра утром.",
        ]
    return chapters


def expected_lines(chapters):
    return [line for heading, paras in chapters for line in [heading, *paras]]


def test_hard_wrapped_pre_page_comes_out_paragraph_by_paragraph(project):
    chapters = chapters_with_dialogue("pre")
    page = sites.page_libru("Повесть", "Антон Павлович Чехов", chapters).encode("koi8-r", "xmlcharrefreplace")
    assert any(len(line) < 80 for line in page.decode("koi8-r").split("\n"))  # hard-wrapped, hyphenated words included
    docs, metrics = run_clean([page])
    assert docs.loc[0, "text"].split("\n") == expected_lines(chapters)
    assert metrics["apparatus_chars_found"] > 0 and metrics["apparatus_chars_kept"] == 0
    kept, metrics = run_clean([page], drop_apparatus=False)
    assert {"Антон Павлович Чехов. Повесть", "Источник: Полное собрание сочинений. Москва, 1980."} <= set(
        kept.loc[0, "text"].split("\n")
    )
    assert metrics["apparatus_chars_kept"] == metrics["apparatus_chars_found"] > 0


def test_wikisource_page_loses_its_footnote_markers_and_notes(project):
    chapters = sites.work("wiki", chapters=2, per_chapter=30)
    docs, metrics = run_clean([sites.page_wikisource("Повесть", chapters, note_every=10).encode("utf-8")])
    assert docs.loc[0, "text"].split("\n") == [
        "Повесть",
        *expected_lines(chapters),
    ]  # the page's heading, the work's title
    assert metrics["apparatus_chars_found"] > 6 * len("Примечание редакции")


def test_plain_text_with_blank_lines_keeps_dialogue_lines_apart():
    text = (
        "ГЛАВА I\n\nОн вошел в комнату и долго смотрел\nна нее.\n- Здравствуйте, - сказал он.\n"
        "- Здравствуйте, - ответила она и,\nпомолчав, прибавила: - Садитесь.\n\nОни сели у "
        "северо-\nзападного окна, и разговор\n"
        "- как всегда - сделался общим.\n"
    )
    paragraphs = [
        "ГЛАВА I",
        "Он вошел в комнату и долго смотрел на нее.",
        "- Здравствуйте, - сказал он.",
        "- Здравствуйте, - ответила она и, помолчав, прибавила: - Садитесь.",
        "Они сели у северо-западного окна, и разговор - как всегда - сделался общим.",
    ]
    assert join_wrapped(text) == paragraphs
    assert unwrap(text) == "<html><body>" + "".join(f"<p>{p}</p>\n" for p in paragraphs) + "</body></html>"


def test_plain_text_with_a_line_per_paragraph_keeps_its_lines():
    paragraphs = sites.paragraphs("lines", 40)  # 15-40 words each: far longer lines than any wrap width
    assert join_wrapped("\n".join(paragraphs)) == paragraphs


def test_paragraphed_html_is_left_as_it_is():
    page = sites.page_html("Том", sites.work("html", chapters=1, per_chapter=5))
    assert unwrap(page) == page


def test_a_long_stage_reports_progress_at_every_tenth_without_a_terminal(caplog):
    from tolstoy.console import progress

    with caplog.at_level(logging.INFO, logger="tolstoy"):
        assert list(progress(range(120), 120, "clean: documents")) == list(range(120))
        assert list(progress(range(10), 10, "clean: documents")) == list(range(10))  # short: silent
    assert [r.getMessage() for r in caplog.records] == [f"clean: documents: {n} of 120" for n in range(12, 121, 12)]


def test_an_undeclared_page_that_reads_as_utf8_is_not_news(project, caplog):
    write_raw([russian_page().encode("utf-8")], declared=None)
    write_params(".", {"clean": clean_params()})
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("clean")
    assert pd.read_csv(CLEAN_REPORT, keep_default_na=False).loc[0, "encoding_note"].startswith("no charset declared")
    assert "decoded as" not in caplog.text


def test_outputs_are_the_same_bytes_with_one_worker_or_two(project):
    pages = [
        sites.page_html(f"Work {i}", sites.work(f"parallel-{i}", chapters=2, per_chapter=30)).encode("cp1251")
        for i in range(10)
    ]
    write_raw(pages + pages[:1])  # a duplicate: dropped in page order, whichever worker cleans it
    write_params(".", {"clean": clean_params()})
    outputs = []
    for workers in ("1", "2"):
        run(stage_command("clean"), project, env=python_env(TOLSTOY_WORKERS=workers))
        outputs.append({path: (project / path).read_bytes() for path in (DOCS, CLEAN_REPORT, CLEAN_METRICS)})
    assert outputs[0] == outputs[1] and read_json(CLEAN_METRICS)["documents"] == 10


def test_a_page_that_fails_in_a_worker_is_named(project):
    pages = [
        sites.page_html(f"Work {i}", sites.work(f"failing-{i}", chapters=1, per_chapter=20)).encode("cp1251")
        for i in range(9)
    ]
    write_raw(pages + [b"<html><body><p>tiny</p></body></html>"])
    write_params(".", {"clean": clean_params()})
    result = run(stage_command("clean"), project, check=False, env=python_env(TOLSTOY_WORKERS="2"))
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "error: http://az.lib.ru/p9 yields "
    )
    assert not DOCS.exists()


# Hostile pages: clean's time stays linear in the page's size, and what a page loses is said.
HOSTILE_CHARS = 300_000  # quadratic time shows at this size (the tags repeated unclosed take a minute)


def work_page(seed, paragraphs):
    return sites.page_html("Том", [("Глава 1", sites.paragraphs(seed, paragraphs))])


def plain_page():
    return work_page("plain", HOSTILE_CHARS // 200)


def filled(page, unit):
    """`page` followed by `unit` repeated up to HOSTILE_CHARS characters."""
    return page + unit * ((HOSTILE_CHARS - len(page)) // len(unit))


def hostile_pages():
    """{what: (page bytes, declared charset)}, each about HOSTILE_CHARS characters, each with a work
    of enough text to pass min_chars."""
    work = work_page("hostile", 100)
    untitled = work.replace(work[work.index("<title>") : work.index("</title>") + len("</title>")], "")
    half, plain = len(work) // 2, plain_page()
    return {
        "unclosed <title>": (filled(untitled, "<title>Глава ").encode("cp1251"), "windows-1251"),
        "unclosed <pre>": (filled(work, "<pre>Глава ").encode("cp1251"), "windows-1251"),
        "<p without >": (filled(work, "<p class=x ").encode("cp1251"), "windows-1251"),
        "nesting deeper than the parser's limit": (filled(work[:half], "<div>Глава ").encode("cp1251"), "windows-1251"),
        "mixed encodings": (plain[: len(plain) // 2].encode("cp1251") + plain[len(plain) // 2 :].encode("utf-8"), None),
        "truncated UTF-16": (plain.encode("utf-16")[:-1], None),
    }


def timed_clean(body, declared, repeats=1):
    """The least of `repeats` times of the clean stage on the one page `body`."""
    write_raw([body], declared=declared)
    write_params(".", {"clean": clean_params()})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call_stage("clean")
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.parametrize("what", list(hostile_pages()))
def test_a_hostile_page_takes_about_the_time_of_a_plain_page_of_its_size(project, what):
    body, declared = hostile_pages()[what]
    plain_seconds = timed_clean(plain_page().encode("cp1251"), "windows-1251", repeats=2)
    hostile_seconds = timed_clean(body, declared, repeats=2)
    assert hostile_seconds < 5 * plain_seconds, f"{what}: {hostile_seconds:.2f}s, a plain page {plain_seconds:.2f}s"


def warnings_of(caplog, url="http://az.lib.ru/p0"):
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    return [message for message in messages if message.startswith(f"{url}: ")]


def test_text_nested_past_the_parser_limit_is_named_with_what_it_lost(project, caplog):
    first, second = sites.paragraphs("shallow", 40), sites.paragraphs("deep", 40)
    nested = "<div>" * 300 + "".join(f"<dd>{p}" for p in second)
    page = sites.page_html("Том", [("Глава 1", first)]).replace("</div>\n<hr", nested + "</div>\n<hr")
    write_raw([page.encode("cp1251")])
    write_params(".", {"clean": clean_params()})
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("clean")
    text = pd.read_parquet(DOCS).loc[0, "text"]
    assert first[-1] in text and second[0] not in text
    [warning] = warnings_of(caplog)
    said = re.fullmatch(
        r"http://az.lib.ru/p0: the HTML parser stopped at its limit "
        r"\(Excessive depth in document: 256\): the last (\d+) characters of the page \((\d+)%\) "
        r"are not in its text",
        warning,
    )
    lost, percent = map(int, said.groups())
    after_the_work = len(page) - page.index("</div>\n<hr")
    assert after_the_work + len("".join(second)) < lost < after_the_work + len(nested)
    assert abs(percent - 100 * lost / len(page)) < 1


def test_replacement_characters_past_a_few_are_counted_in_a_warning(project, caplog):
    page = russian_page()
    mixed = page[: len(page) // 2].encode("cp1251") + page[len(page) // 2 :].encode("utf-8")
    stray = page.replace(sites.SENTENCES[0], sites.SENTENCES[0] + "\ufffd\ufffd\ufffd").encode("utf-8")
    write_raw([mixed, stray], declared=None)
    write_params(".", {"clean": clean_params(dedup=False)})
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("clean")
    texts = pd.read_parquet(DOCS)["text"]
    assert texts[0].count("\ufffd") > 1000 and texts[1].count("\ufffd") == 3
    assert (
        f"http://az.lib.ru/p0: {texts[0].count(chr(0xFFFD))} characters of its text are U+FFFD (\ufffd), "
        "for bytes that do not decode as utf-8: does the page mix encodings?" in warnings_of(caplog)
    )
    assert warnings_of(caplog, "http://az.lib.ru/p1") == []  # three are a few


def test_a_utf16_page_cut_mid_character_keeps_its_text_with_a_warning(project, caplog):
    chapters = sites.work("utf-16", chapters=1, per_chapter=20)
    body = sites.page_html("Том", chapters).encode("utf-16")
    write_raw([body[:-1]], declared=None)
    write_params(".", {"clean": clean_params()})
    with caplog.at_level(logging.INFO, logger="tolstoy"):
        call_stage("clean")
    assert pd.read_parquet(DOCS).loc[0, "text"].split("\n") == expected_lines(chapters)
    assert warnings_of(caplog) == [
        "http://az.lib.ru/p0: ends in the middle of a utf-16 character, which is left out: cut short?"
    ]


@pytest.mark.parametrize(
    "body",
    [
        russian_page().encode("utf-16-le"),
        russian_page().replace("</title>", "\0</title>").encode("cp1251"),
    ],
    ids=["UTF-16 with no byte order mark", "a stray NUL byte"],
)
def test_text_with_nul_bytes_is_still_text(body):
    assert sites.SENTENCES[0] in decode_page(body).text


def test_a_page_that_is_not_text_is_one_error_naming_it(project):
    image = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)) * 40
    write_raw([sites.page_html("A", sites.work(1)).encode("cp1251"), image])
    write_params(".", {"clean": clean_params()})
    result = run(stage_command("clean"), project, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "error" in line.lower()] == [
        "error: http://az.lib.ru/p1: is not text: 43 of its 10256 bytes are NUL, as in an image or an archive "
        "(declared: windows-1251)"
    ]
    assert not DOCS.exists()
