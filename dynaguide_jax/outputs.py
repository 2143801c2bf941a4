"""Output directories and files: checked before any work, written so a failure leaves nothing that
reads as valid, and a full disk reported once.

``prepare_output_dir`` creates a command's output directory and proves it writable up front, so a
path under a regular file or without write permission fails at once with one message naming it.
``is_disk_full`` recognises ENOSPC however it arrives (an ``OSError``, or wrapped by orbax /
TensorStore / asyncio in other exceptions); ``quiet_disk_full_reports`` keeps the background threads of those
libraries from printing one traceback per failed write while the caller reports the error once.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
import tempfile
import threading

NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"
_LOOP_CLOSED = "Event loop is closed"  # what pending writes raise once a failed save is torn down


class OutputError(OSError):
    """An output path that cannot be written; the message names it and says what to do."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


class DiskFullError(OutputError):
    """The disk filled up while writing ``path``."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.errno, self.filename = errno.ENOSPC, path


def prepare_output_dir(path: str | os.PathLike, name: str = "--out") -> str:
    """Create ``path`` (and its parents) and check a file can be written in it; returns its absolute
    path. Raises ``OutputError`` naming ``name`` and the path (a component that is a regular file, no
    permission, a read-only or full file system)."""
    path = os.path.abspath(os.fspath(path))
    try:
        os.makedirs(path, exist_ok=True)
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        fd, probe = tempfile.mkstemp(prefix=".dynaguide-write-test-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OutputError(_explain(path, name, e)) from e
    return path


def _explain(path: str, name: str, e: OSError) -> str:
    if e.errno in (errno.ENOTDIR, errno.EEXIST) or isinstance(e, (NotADirectoryError, FileExistsError)):
        blocker = _file_in_the_way(path)
        if blocker == path:
            return f"{name} {path} is a file, not a directory: pass a directory (new or existing)"
        if blocker is not None:
            return f"{name} {path} cannot be created: {blocker} is a file, not a directory"
    if e.errno == errno.ENOSPC:
        return f"{NO_SPACE} while creating {name} {path}: free space and rerun"
    if e.errno in (errno.EACCES, errno.EPERM):
        if not os.path.isdir(path):
            parent = _deepest_existing(path)
            return (f"{name} {path} cannot be created: {parent} is not writable (permission denied): pass a "
                    "directory you can write to")
        return f"{name} {path} is not writable (permission denied): pass a directory you can write to"
    if e.errno == errno.EROFS:
        return f"{name} {path} is on a read-only file system: pass a writable directory"
    return f"{name} {path} is not a writable directory: {e.strerror or e}"


def _deepest_existing(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _file_in_the_way(path: str) -> str | None:
    """The first existing component of ``path`` that is not a directory."""
    parts = []
    head = path
    while head and head not in parts:
        parts.append(head)
        head = os.path.dirname(head)
    for p in reversed(parts):  # from the root down
        if os.path.lexists(p) and not os.path.isdir(p):
            return p
    return None


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it wraps: cause, context, group members) is ENOSPC."""
    stack, seen = [exc], set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        try:
            if NO_SPACE in str(e):  # TensorStore / orbax wrap it in ValueError('RESOURCE_EXHAUSTED: ...')
                return True
        except Exception:  # noqa: BLE001 - a broken __str__ is not a full disk
            pass
        stack += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return False


def write_json_atomic(path: str | os.PathLike, obj, **dump_kwargs) -> None:
    """Write JSON to ``path`` through a temporary file and a rename: a failure (a full disk) leaves
    the previous file or none, never a truncated one."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, **dump_kwargs)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


class _Quiet:
    """Drops the reports of disk-full errors (and, once the disk is full, of the 'event loop is
    closed' errors of the writes it cut off) from logging, thread and unraisable-exception hooks."""

    LOGGERS = ("", "absl", "asyncio", "tensorboardX")

    def __init__(self):
        self.full = False  # set once a disk-full report was dropped or the caller saw one
        self.depth = 0
        self._filter = logging.Filter()
        self._filter.filter = self._keep_record
        self._prev_thread_hook = self._prev_unraisable_hook = None

    def _drop(self, exc, text: str = "") -> bool:
        if is_disk_full(exc) or NO_SPACE in text:
            self.full = True
            return True
        return self.full and (_LOOP_CLOSED in text or (exc is not None and _LOOP_CLOSED in str(exc)))

    def _keep_record(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001
            text = ""
        return not self._drop(exc, text)

    def _thread_hook(self, args) -> None:
        if not self._drop(args.exc_value):
            (self._prev_thread_hook or threading.__excepthook__)(args)

    def _unraisable_hook(self, unraisable) -> None:
        if not self._drop(unraisable.exc_value):
            (self._prev_unraisable_hook or sys.__unraisablehook__)(unraisable)

    def install(self) -> None:
        self.depth += 1
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self._filter)  # no-op when present
        if threading.excepthook != self._thread_hook:  # (re)install over whatever is current
            self._prev_thread_hook, threading.excepthook = threading.excepthook, self._thread_hook
        if sys.unraisablehook != self._unraisable_hook:
            self._prev_unraisable_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable_hook

    def uninstall(self) -> None:
        self.depth -= 1
        if self.depth > 0:
            return
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)
        if threading.excepthook == self._thread_hook:
            threading.excepthook = self._prev_thread_hook or threading.__excepthook__
        if sys.unraisablehook == self._unraisable_hook:
            sys.unraisablehook = self._prev_unraisable_hook or sys.__unraisablehook__


_QUIET = _Quiet()


class quiet_disk_full_reports:  # noqa: N801 - used like a function
    """Drop background reports of a full disk (orbax / asyncio / TensorBoard threads, one traceback
    per failed write) until ``release()``, or as a context manager; the caller reports the error
    once. After ``disk_full()`` (or a disk-full error leaving the ``with``) the filters stay for the
    rest of the process: the tasks and threads the error cut off report again as they are
    garbage-collected, up to interpreter exit."""

    def __init__(self):
        self._held = True
        _QUIET.install()

    @staticmethod
    def disk_full() -> None:
        _QUIET.full = True

    def release(self) -> None:
        if self._held and not _QUIET.full:
            _QUIET.uninstall()
        self._held = False

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and is_disk_full(exc):
            self.disk_full()
        self.release()
