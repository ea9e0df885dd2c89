"""The pipeline's stages, one module or package each, run as `python -m stages.<name>` (dvc.yaml):
validate, fetch, clean, tokenizer, tokenize, train, evaluate, sample.

Beside them, the code they share: params and rules (loading and checking params.yaml), paths,
common (errors, logging, atomic writes), sources (URLs and local patterns), web (fetch's HTTP
session), charset and layouts (page decoding and site layouts), documents and blocks (the cleaned
documents and the token blocks), base (a base model to fine-tune).
"""
