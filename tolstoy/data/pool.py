"""Processes that prepare data side by side, in order."""

import multiprocessing
import os

from tolstoy import StageError
from tolstoy.console import configure_logging

WORKERS_ENV = "TOLSTOY_WORKERS"


def workers():
    """Processes that prepare data side by side: TOLSTOY_WORKERS, else one per core. Outputs do not
    depend on it, so it is not a param: changing it re-runs nothing."""
    value = os.environ.get(WORKERS_ENV, "")
    if value and not (value.isdigit() and int(value) > 0):
        raise StageError(f"{WORKERS_ENV}={value!r} must be a positive integer")
    return int(value) if value else os.cpu_count() or 1


def ordered_map(function, items, n_items, fewest=8, setup=None, setup_args=()):
    """function(item) for every item, in order; in worker processes, one item each at a time, when
    `n_items` (documents) are at least `fewest` (below that, starting the processes costs more than
    it saves). setup(*setup_args) runs first wherever function will run."""
    processes = min(workers(), n_items)
    if processes < 2 or n_items < fewest:
        if setup:
            setup(*setup_args)
        yield from map(function, items)
        return
    # spawn: a fresh interpreter, in this directory, with no threads forked from a library mid-use
    with multiprocessing.get_context("spawn").Pool(
        processes, initializer=start_worker, initargs=(setup, setup_args)
    ) as pool:
        yield from pool.imap(function, items)


def start_worker(setup, setup_args):
    configure_logging()
    if setup:
        setup(*setup_args)
