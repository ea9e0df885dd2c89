"""Reading the cleaned documents table (data/clean/docs.parquet)."""
import pyarrow.parquet as pq


def iter_documents(path, columns=("id", "text")):
    """Stream rows of the documents table one at a time (memory stays flat as the corpus grows)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1, columns=list(columns)):
        yield from batch.to_pylist()
