"""Creating, appending to and deleting files under an output folder without ever following a link.

In a shared folder, anyone who can write there can plant a symbolic link where
a run will write (``OUT/.pulse.lock``, ``OUT/.pulse-parts``, a temporary image
name, ``OUT/<stem>/HR``) and so make the run truncate, append to or delete
another user's files. Every file a run creates, appends to or deletes under
``--out`` goes through this module, which follows one rule:

* a name is opened with ``O_NOFOLLOW`` (and ``O_EXCL`` for new files), so the
  kernel refuses to go through a link;
* a link found where the run wants a file or a folder is removed (unlinking a
  link never touches what it points to) and the run makes its own, with a
  warning line;
* a folder is listed or emptied only after checking that it is a real folder,
  and only regular files and links in it are removed, never their targets;
* renaming a temporary file into place (``os.replace``) swaps directory entries,
  so a link at the final name is replaced, not written through.

The output folder itself may be a link (the user's choice); entries inside it may not.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger(__name__)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _drop_link(path: Path, what: str) -> None:
    """Remove a planted link at ``path`` (never its target), saying so."""
    target = os.readlink(path)
    os.unlink(path)
    log.warning("%s was a link to %s; removed the link (its target is untouched) and made a real %s",
                path, target, what)


def open_fd(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a link at ``path``: one found there is removed and the open retried."""
    path = Path(path)
    for attempt in (0, 1):
        try:
            return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
        except OSError as exc:
            planted = exc.errno in (errno.ELOOP, errno.EMLINK) or (exc.errno == errno.EEXIST and _is_link(path))
            if attempt or not planted or not _is_link(path):
                raise
            _drop_link(path, "file")
    raise AssertionError("unreachable")  # pragma: no cover


def create_new(path: Path, binary: bool = True) -> IO:
    """A new file at ``path`` (a temporary name), created exclusively; a link or stale file there is removed."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = open_fd(path, flags)
    except FileExistsError:
        if stat.S_ISREG(os.lstat(path).st_mode):  # a stale temporary file of a killed run
            os.unlink(path)
            fd = open_fd(path, flags)
        else:
            raise
    return os.fdopen(fd, "wb" if binary else "w")


def open_append(path: Path) -> IO:
    """``path`` opened for appending text (created if missing), never through a link."""
    fd = open_fd(Path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
    return os.fdopen(fd, "a")


def real_dir(path: Path, root: Path) -> Path:
    """Make ``path`` (under ``root``) a real folder, component by component; links on the way are removed."""
    path, root = Path(path), Path(root)
    rel = path.relative_to(root)
    cur = root
    for part in rel.parts:
        cur = cur / part
        if _is_link(cur):
            _drop_link(cur, "folder")
        try:
            os.mkdir(cur, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(cur).st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(cur)) from None
    return path


def listed_files(folder: Path, pattern: str = "*") -> Iterator[Path]:
    """The regular files matching ``pattern`` in ``folder`` if it is a real folder (nothing for a link)."""
    folder = Path(folder)
    if _is_link(folder) or not folder.is_dir():
        return iter(())
    return (p for p in sorted(folder.glob(pattern)) if stat.S_ISREG(os.lstat(p).st_mode))


def remove(path: Path) -> None:
    """Remove the file or link at ``path`` (never a link's target, never a folder); nothing if missing."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "a folder, not removed", str(path))
    os.unlink(path)


def remove_dir_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it is a real, empty folder; a link is removed, never what it points to."""
    folder = Path(folder)
    if _is_link(folder):
        os.unlink(folder)
        return
    try:
        os.rmdir(folder)
    except OSError:
        pass


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a new temporary file (never through a link), then a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with create_new(tmp, binary=False) as f:
            f.write(text)
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        os.replace(tmp, path)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
    return path


def require_regular_file(path, what: str = "file") -> Path:
    """``path`` if it is a regular file; else a one-line error (a FIFO would block a reader forever).

    Raises InputImageError for missing or special files; callers that read model files get it
    re-raised as their own error type where they need one.
    """
    from .errors import InputImageError

    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputImageError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise InputImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
            "not a regular file"
        raise InputImageError(f"{path}: is {kind}, not a {what}; only regular files are read")
    return path
