"""From sources to token blocks: fetching, cleaning, documents, the tokenizer, splits, tokens, blocks, groups."""
