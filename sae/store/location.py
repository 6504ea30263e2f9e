"""Where a store lives: local folders (atomic create by rename) or any fsspec URL zarr accepts."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def is_local(url: str | os.PathLike) -> bool:
    """True for plain paths and ``file://`` URLs, where atomic rename is available."""
    text = os.fspath(url)
    return "://" not in text or text.startswith("file://")


def local_path(url: str | os.PathLike) -> Path:
    """The filesystem path of a local URL."""
    text = os.fspath(url)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def partial_path(final: Path) -> Path:
    """A unique sibling folder to build a store in before it is renamed into place."""
    return final.with_name(f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace_dir(built: Path, final: Path) -> None:
    """Move a fully built folder onto ``final``; an old folder there is swapped out, then removed."""
    trash = None
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:12]}")
        os.replace(final, trash)
    os.replace(built, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(final: Path) -> None:
    """Delete leftovers of interrupted creates next to ``final`` whose writer process is gone."""
    if not final.parent.exists():
        return
    for leftover in final.parent.glob(f".{final.name}.partial-*"):
        pid = leftover.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
