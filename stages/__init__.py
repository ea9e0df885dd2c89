"""The pipeline's stages, one module each, run as `python -m stages.<name> PATHS...` with the paths
dvc.yaml gives it: validate, fetch, clean, tokenizer, tokenize, groups, train, evaluate, sample.
The work itself is the library's (tolstoy/).
"""
