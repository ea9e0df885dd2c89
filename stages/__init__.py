"""The pipeline's stages, one module each, run as `python -m stages.<name>` (dvc.yaml): validate,
fetch, clean, tokenizer, tokenize, groups, train, evaluate, sample; and paths, where each reads
and writes. The work itself is the library's (tolstoy/).
"""
