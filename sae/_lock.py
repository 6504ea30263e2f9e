"""Exclusive locks on what a command writes (a store, a run folder), so two writers never interleave.

A lock is a file beside the target (``.<name>.lock``) held with ``fcntl.flock`` for the life of the
``with`` block; it records the holder's pid, host, command and start time, so a second writer is
refused at once with a message naming who holds it. The kernel drops a flock when its process dies,
so a killed writer never leaves a stale lock behind (the file stays; only the flock matters).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sae.errors import LockedError

_HELD: dict[Path, int] = {}
"""Lock file -> the thread holding it in this process: the same thread taking it again (a stage inside a
stage) is a no-op, not a self-deadlock; another thread is refused like another process."""


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of ``target`` (a sibling, so locking never writes inside the target)."""
    target = Path(target).absolute()
    return target.with_name(f".{target.name}.lock")


def holder(target: str | os.PathLike) -> dict:
    """What the lock file of ``target`` says about its last holder ({} when none)."""
    try:
        return json.loads(lock_path(target).read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def exclusive(target: str | os.PathLike, what: str = "") -> Iterator[Path]:
    """Hold the exclusive lock of ``target`` (a store or run folder) or raise :class:`LockedError` now."""
    path = lock_path(target)
    if _HELD.get(path) == threading.get_ident():
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = holder(target)
            since = time.strftime("%H:%M:%S", time.localtime(info["since"])) if "since" in info else "?"
            raise LockedError(f"{Path(target).name} is in use by pid {info.get('pid', '?')} ({info.get('command', '?')}, since {since}); "
                              "wait for it to finish, or stop that process") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": what or " ".join(sys.argv)[:200], "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _HELD[path] = threading.get_ident()
        try:
            yield path
        finally:
            _HELD.pop(path, None)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
