"""The write lock of one store: a create, an append transaction and any attribute rewrite hold it.

Two writers of the same store, in two processes or as two :class:`~sae.store.store.Store` objects in
one process, never interleave: the second is refused at once with :class:`~sae.errors.LockedError`
naming the holder. Across processes the lock is :func:`sae._lock.exclusive` on the store's folder
(a ``.<name>.lock`` sibling, released by the kernel when the holder dies); inside one process a
registry of the live holders refuses a second ``Store`` object, which the per-thread re-entrance of
``exclusive`` would otherwise let through. Remote URLs (``memory://``, ``s3://``) only get the
in-process part: there is no portable cross-machine lock for them.
"""

from __future__ import annotations

import os
import weakref
from contextlib import ExitStack
from pathlib import Path

from sae._lock import exclusive
from sae.errors import LockedError
from sae.store.integrity import disk_errors

_HOLDERS: weakref.WeakValueDictionary[str, WriteLock] = weakref.WeakValueDictionary()
"""Store key -> the lock object writing it in this process (entries vanish with their object)."""


class WriteLock:
    """A re-entrant hold of one store's exclusive write lock, owned by one ``Store`` object.

    ``acquire`` / ``release`` nest (an append inside a transaction inside a create); the lock is
    taken by the outermost ``acquire`` and dropped by the matching ``release``. A lock object that is
    garbage-collected while held (a ``Store.create`` never closed) releases with it.
    """

    def __init__(self, url: str, target: Path | None, what: str = "") -> None:
        self.url = url
        self.target = target
        """The local store folder (None for remote URLs: in-process lock only)."""
        self.what = what
        self.key = str(target) if target is not None else url
        self.depth = 0
        self._stack: ExitStack | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self.depth > 0

    def acquire(self) -> bool:
        """Take the lock (or nest once more); True when this call took it, False when already held."""
        if self.depth:
            self.depth += 1
            return False
        other = _HOLDERS.get(self.key)
        if other is not None and other is not self and other.held:
            name = self.target.name if self.target is not None else self.url
            raise LockedError(f"{name} is in use by pid {os.getpid()} (another Store object in this process is writing it); "
                              "finish that write (close its transaction or create block) first")
        stack = ExitStack()
        if self.target is not None:
            with disk_errors(self.url):  # the lock file cannot be written: a full disk, a read-only folder
                stack.enter_context(exclusive(self.target, self.what))
        self._stack = stack
        _HOLDERS[self.key] = self
        self.depth = 1
        return True

    def release(self) -> None:
        """Undo one :meth:`acquire`; the outermost one frees the lock."""
        if self.depth == 0:
            return
        self.depth -= 1
        if self.depth:
            return
        if _HOLDERS.get(self.key) is self:
            del _HOLDERS[self.key]
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

