"""tolstoy: the library the pipeline's stages call, which knows nothing of DVC.

config/: params.yaml's sections as typed models (params), the kinds of value they hold (fields),
accelerate configs. data/: sources, fetching (fetching; web, session, local), cleaning (cleaning;
charset, layouts, page_tree), documents, the tokenizer, train and validation splits (splits), token
files (tokens), blocks, groups, words, worker processes (pool). model/: bases, pretrained, building
(build), the loss (loss), export. training/: the run top to bottom (run), Trainer's arguments and
the model kept, the plan, checkpoints (fingerprint, seals), callbacks, starting processes
(launcher) and processes agreeing (distributed). evaluation/: validation loss and group scores
(scores), samples. device: CPU or GPU and its peak. console: logging, progress, the one `error:`
line. files: atomic writes, JSON, hashes.
"""


class StageError(Exception):
    """Bad input or params: reported as one line that names the culprit, exit status 2."""
