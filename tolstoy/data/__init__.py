"""From sources to token blocks: fetching, page decoding and extraction, documents, tokens, blocks."""
