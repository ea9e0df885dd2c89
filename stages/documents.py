"""Reading the cleaned documents table (data/clean/docs.parquet)."""
import pyarrow.parquet as pq

from stages.common import reading


def iter_documents(path, columns=("id", "text")):
    """Stream rows of the documents table one at a time (memory stays flat as the corpus grows)."""
    with reading(path, "the documents table"):
        table = pq.ParquetFile(path)
    for batch in table.iter_batches(batch_size=1, columns=list(columns)):
        yield from batch.to_pylist()
