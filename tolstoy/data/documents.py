"""Reading the cleaned documents table (data/clean/docs.parquet)."""

import pyarrow.parquet as pq

from tolstoy.console import progress
from tolstoy.files import reading


def iter_documents(path, columns=("id", "text"), shown_as=None):
    """Stream rows of the documents table one at a time (memory stays flat as the corpus grows),
    with their progress shown as `shown_as` when given."""
    with reading(path, "the documents table"):
        table = pq.ParquetFile(path)
    rows = (row for batch in table.iter_batches(batch_size=1, columns=list(columns)) for row in batch.to_pylist())
    yield from progress(rows, table.metadata.num_rows, shown_as) if shown_as else rows


def count_documents(path):
    with reading(path, "the documents table"):
        return pq.ParquetFile(path).metadata.num_rows
