"""tolstoy: the library."""


class StageError(Exception):
    """Bad input or params: reported as one line that names the culprit, exit status 2."""
