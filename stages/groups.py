"""groups: texts that are not trained on (groups.sources: other authors, the author's unseen works)
prepared like the training pages, for the evaluate stage to score.

Each group's sources are fetched and cleaned by the fetch and clean stages' own code, with
params.yaml's fetch and clean settings, in a work directory of its own; its documents are then
encoded whole (no validation split) with models/tokenizer, each followed by end-of-text, into
data/groups/<name>/tokens/text.bin, which Blocks reads as the split "text".
"""

import contextlib
import os
import shutil
from pathlib import Path

import yaml

from stages import clean, fetch
from stages.paths import DOCS, GROUPS, TOKENIZER
from tolstoy import StageError
from tolstoy.config.params import load_params
from tolstoy.console import log, run_stage
from tolstoy.data.documents import iter_documents
from tolstoy.data.sources import expand_sources
from tolstoy.data.tokens import TokenWriter, close_split, encoded, load_tokenizer, tokens_meta
from tolstoy.files import atomic_path, write_json

SPLIT = "text"


@contextlib.contextmanager
def inside(directory):
    """Run the stages' code with `directory` as the project: their paths are relative."""
    back = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(back)


def prepare_group(directory, sources, settings, tokenizer, eot_id, block_size):
    """Fetch, clean and encode one group into directory/tokens; its figures."""
    directory.mkdir()
    # Local sources resolved here, and read from this project and its ../shared: the stages run in the group's folder.
    project = Path.cwd()
    urls = [str(Path(source).resolve()) if "://" not in source else source for source in expand_sources(sources)]
    group_params = {"fetch": {**settings["fetch"], "urls": urls}, "clean": settings["clean"]}
    (directory / "params.yaml").write_text(yaml.safe_dump(group_params, allow_unicode=True), encoding="utf-8")
    with inside(directory):
        fetch.main(project)
        clean.main()
        Path("tokens").mkdir()
        writer = TokenWriter(Path("tokens") / f"{SPLIT}.bin")
        documents = 0
        for doc in iter_documents(DOCS, ["text"]):
            writer.write(encoded(tokenizer, eot_id, doc["text"]), len(doc["text"]), len(doc["text"].encode()))
            documents += 1
        stats = close_split(
            writer, "the group's text", block_size, "add text to the group, or use a smaller block_size"
        )
        write_json(Path("tokens/meta.json"), tokens_meta(tokenizer, eot_id, block_size, {SPLIT: stats}))
    for prepared in ("data", "metrics"):  # the pages, the table and their reports: what is scored is in tokens/
        shutil.rmtree(directory / prepared)
    (directory / "params.yaml").unlink()
    return {"documents": documents, "chars": stats["chars"], "tokens": stats["tokens"]}


def main():
    params = load_params("groups")
    settings = {"fetch": load_params("fetch"), "clean": load_params("clean")}
    block_size = load_params("tokenize")["block_size"]
    tokenizer, eot_id = load_tokenizer(TOKENIZER)
    prepared = {}
    with atomic_path(GROUPS) as tmp:
        tmp.mkdir()
        for name, sources in params["sources"].items():
            log.info("groups: %s", name)
            try:
                prepared[name] = prepare_group(tmp / name, sources, settings, tokenizer, eot_id, block_size)
            except StageError as error:
                raise StageError(f"groups.sources.{name}: {error}") from None
        write_json(tmp / "groups.json", prepared)  # the directory is never empty: DVC tracks it either way
    log.info(
        "groups: %d prepared (%s)",
        len(prepared),
        ", ".join(f"{name} {g['chars']:,} characters" for name, g in prepared.items()) or "none set",
    )


if __name__ == "__main__":
    run_stage(main)
