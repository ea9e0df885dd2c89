"""tolstoy: the library the pipeline's stages call, which knows nothing of DVC.

config/: params.yaml's sections and the rules their values follow. data/: sources, fetching
(web, session, local), page decoding and layouts (charset, layouts, page_tree), documents,
token files (tokens), blocks, words, worker processes (pool). model/: bases, pretrained,
building (build), the loss (loss), export. training/: the run top to bottom (run), Trainer's
arguments and the model kept, the plan, checkpoints (fingerprint, seals), callbacks, starting
processes (launcher) and processes agreeing (distributed). device: CPU or GPU and its peak.
console: logging, progress, the one `error:` line. files: atomic writes, JSON, hashes.
"""


class StageError(Exception):
    """Bad input or params: reported as one line that names the culprit, exit status 2."""
