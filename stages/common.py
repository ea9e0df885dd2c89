"""What every stage uses: errors, atomic writes, JSON, logging, peak memory."""
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger("tolstoy")
# What to do about an output of the pipeline that cannot be read.
REBUILD_OR_RESTORE = "rebuild it with `dvc repro` or restore it with `dvc checkout`"
# Set by the train launcher: a process that stops on a StageError also writes its message there.
ERROR_FILE_ENV = "TOLSTOY_ERROR_FILE"
WORKERS_ENV = "TOLSTOY_WORKERS"
# Set by the train launcher when what the training processes print reaches a terminal.
TERMINAL_ENV = "TOLSTOY_TERMINAL"


class StageError(Exception):
    """Bad input or params: reported as one line that names the culprit, exit status 2."""


def remove(path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (file or directory); move it into place only on success.

    Readers never see a half-written output: on any error, or Ctrl-C, the temporary is removed
    and whatever was at `path` before stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        remove(stale)  # left by a killed run
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    if path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def reading(path, what):
    """Any failure to read `path` as `what` (a truncated, missing or foreign file) becomes one
    StageError naming the file; libraries raise many kinds of error for it."""
    try:
        yield
    except StageError:
        raise
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise StageError(f"{path}: cannot be read as {what} ({type(error).__name__}{': ' + detail if detail else ''}); "
                         f"{REBUILD_OR_RESTORE}") from None


def write_json(path, obj):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def configure_logging():
    """The stage's own lines, and only the warnings of the libraries: their INFO lines are about themselves."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)


def run_stage(main, name=None):
    """Run a stage: INFO logging, SIGTERM as an exception, and a StageError becomes one `error:` line and exit status 2.
    The closing line names `name`, or the script run."""
    configure_logging()
    if "transformers" in sys.modules:  # its bars (loading weights, writing shards) say nothing about the stage
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    # SIGTERM (kill, dvc exp queue kill) raises like Ctrl-C, so temporaries are cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.perf_counter()
    try:
        main()
        log.info("%s: %.1fs, peak RSS %.0f MiB", name or Path(sys.argv[0]).stem, time.perf_counter() - started, peak_rss_bytes() / 2**20)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        if os.environ.get(ERROR_FILE_ENV):
            Path(os.environ[ERROR_FILE_ENV]).write_text(f"{e}\n", encoding="utf-8")
        sys.exit(2)


def progress(items, total, what, large=50):
    """`items`, with their progress shown when there are at least `large` of them: a bar on a
    terminal, else a line at every tenth (logs of CI and queued experiments)."""
    if total < large:
        yield from items
    elif sys.stderr.isatty():
        from tqdm import tqdm  # the libraries' own bar; imported only where it draws

        yield from tqdm(items, total=total, desc=what, leave=False, dynamic_ncols=True)
    else:
        every = max(1, total // 10)
        for done, item in enumerate(items, 1):
            yield item
            if done % every == 0 or done == total:
                log.info("%s: %d of %d", what, done, total)


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
    with multiprocessing.get_context("spawn").Pool(processes, initializer=start_worker, initargs=(setup, setup_args)) as pool:
        yield from pool.imap(function, items)


def start_worker(setup, setup_args):
    configure_logging()
    if setup:
        setup(*setup_args)


def peak_rss_bytes():
    """This process's own peak RSS (VmHWM). ru_maxrss would also count the parent's RSS at fork."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0
