"""Local sources of the fetch stage (paths and file:// URLs in fetch.urls, a FETCH_MIRROR on disk):
where they may be, how they are read and how they are recorded.

Fetched pages go to data/raw, which `dvc push` sends to the team's remote, so a pattern or a
symlink must not bring in other files of the machine: a local source is read only when, its
symlinks resolved, it is a regular file in the project or in ../shared beside it, and never
under /proc, /sys or /dev (whose files report a size of 0). At most max_bytes are read, whatever
size the file reports. A source is recorded relative to the project (../shared/... for the
shared folder), so the manifest is the same on every machine.
"""

import os
import stat
from pathlib import Path

from tolstoy.data.sources import local_path
from tolstoy.data.web import FetchFailure

SYSTEM = (Path("/proc"), Path("/sys"), Path("/dev"))
CONTENT_TYPES = {".html": "text/html", ".htm": "text/html", ".shtml": "text/html", ".txt": "text/plain"}


def places(project):
    """Where local sources may be, each as (its real path, the path it is recorded under)."""
    project = Path(project).resolve()
    return [(project, Path(".")), ((project.parent / "shared").resolve(), Path("../shared"))]


def place_of(path, project):
    """`path` (resolved) relative to the project, or as ../shared/...; None outside both."""
    for real, recorded_as in places(project):
        if path.is_relative_to(real):
            return (recorded_as / path.relative_to(real)).as_posix()
    return None


def recorded(source, project):
    """A local source as the manifest records it: relative, or as written when outside the places."""
    return place_of(local_path(source).resolve(), project) or source


def read_local(source, max_bytes, project):
    """(record, bytes) of a local source: a regular file in the project or ../shared, at most max_bytes of it."""
    name = recorded(source, project)
    try:
        path = local_path(source).resolve(strict=True)
    except FileNotFoundError:
        raise FetchFailure(f"no such file: {name}") from None
    except (OSError, RuntimeError) as error:  # a symlink loop
        raise FetchFailure(f"cannot resolve {name}: {error}") from None
    actual = "" if Path(os.path.abspath(local_path(source))) == path else f"it is {path}, "
    if any(path.is_relative_to(system) for system in SYSTEM):
        raise FetchFailure(f"{actual}under /proc, /sys or /dev: not read")
    where = place_of(path, project)
    if where is None:
        raise FetchFailure(f"{actual}outside the project and ../shared: not read")
    content_type = CONTENT_TYPES.get(path.suffix.lower(), "")
    if not content_type:
        raise FetchFailure(f"{path.suffix or 'no'} extension is not an HTML or text file")
    try:
        # the resolved path, no symlink followed; O_NONBLOCK: opening a FIFO does not wait for a writer
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise FetchFailure(f"{actual}not a regular file")
            body = file.read(max_bytes + 1)
    except OSError as error:
        raise FetchFailure(f"cannot read {where}: {error.strerror or error}") from None
    if len(body) > max_bytes:
        raise FetchFailure(f"{where} is over max_bytes={max_bytes}")
    return {"final_url": where, "status": 200, "content_type": content_type, "attempts": 1}, body
