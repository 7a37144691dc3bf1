"""Files in ``vision.model_cache``: written whole or not at all, and measured by one process
at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from livemod.errors import ModelError


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a part (temp file + rename)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fp:
                fp.write(data)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a model is not a secret
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise _unwritable(path, exc) from exc


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fp = path.open("a")
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    with fp:
        fcntl.flock(fp, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fp, fcntl.LOCK_UN)


def _unwritable(path: Path, exc: OSError) -> ModelError:
    return ModelError(
        f"cannot write {path}: {exc.strerror or exc}; set vision.model_cache to a writable folder"
    )
