"""Groups: texts that are not trained on (other authors, the author's unseen works), each fetched and
cleaned as the training pages are and encoded whole (no validation split), each document followed by
end-of-text, into <group>/tokens/text.bin, which Blocks reads as the split "text"."""

import shutil

from tolstoy.data.cleaning import stored_pages, write_documents
from tolstoy.data.documents import iter_documents
from tolstoy.data.fetching import check_fetched, fetch_all
from tolstoy.data.tokens import TokenWriter, close_split, encoded, tokens_meta
from tolstoy.files import write_json

SPLIT = "text"


def prepare_group(directory, sources, fetch_params, clean_params, mirror_spec, tokenizer, eot_id, block_size):
    """Fetch, clean and encode the sources of one group into directory/tokens; its figures. What is
    fetched (through the mirror of `mirror_spec`, as fetch_all) and cleaned on the way
    (directory/raw, directory/docs.parquet) is removed."""
    raw, docs, tokens = directory / "raw", directory / "docs.parquet", directory / "tokens"
    directory.mkdir()
    fetch_params = fetch_params.model_copy(update={"urls": sources})  # checked as groups.sources
    check_fetched(fetch_all(fetch_params, raw, mirror_spec), fetch_params.on_error)
    write_documents(stored_pages(raw), raw, docs, clean_params)
    tokens.mkdir()
    writer = TokenWriter(tokens / f"{SPLIT}.bin")
    documents = 0
    for doc in iter_documents(docs, ["text"]):
        writer.write(encoded(tokenizer, eot_id, doc["text"]), len(doc["text"]), len(doc["text"].encode()))
        documents += 1
    stats = close_split(writer, "the group's text", block_size, "add text to the group, or use a smaller block_size")
    write_json(tokens / "meta.json", tokens_meta(tokenizer, eot_id, block_size, {SPLIT: stats}))
    shutil.rmtree(raw)
    docs.unlink()
    return {"documents": documents, "chars": stats["chars"], "tokens": stats["tokens"]}
