"""What a command prints: its logger, progress, and the one `error:` line (exit status 2) that
bad input or params become."""

import logging
import os
import signal
import sys
import time
from pathlib import Path

from tolstoy import StageError

log = logging.getLogger("tolstoy")

# Set by the train launcher: a process that stops on a StageError also writes its message there.
ERROR_FILE_ENV = "TOLSTOY_ERROR_FILE"
# Set by the train launcher when what the training processes print reaches a terminal.
TERMINAL_ENV = "TOLSTOY_TERMINAL"


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
        log.info(
            "%s: %.1fs, peak RSS %.0f MiB",
            name or Path(sys.argv[0]).stem,
            time.perf_counter() - started,
            peak_rss_bytes() / 2**20,
        )
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


def peak_rss_bytes():
    """This process's own peak RSS (VmHWM). ru_maxrss would also count the parent's RSS at fork."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0
