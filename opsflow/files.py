"""Files a routine writes for people (CSV reports, charts): where they go, and writing them atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from opsflow.embedded import home_dir
from opsflow.errors import PermanentFailure

#: Where reports go when the config and the run say nothing (under ``$OPSFLOW_HOME``).
DEFAULT_OUT_DIR = "reports/out"


def output_dir(configured: str | None) -> Path:
    """An output directory, absolute: a relative one (the default ``reports/out`` included) is under
    ``$OPSFLOW_HOME``, so a report lands in the same place whatever the working directory of the run."""
    chosen = Path(configured or DEFAULT_OUT_DIR).expanduser()
    return chosen if chosen.is_absolute() else home_dir().absolute() / chosen


def write_atomically(path: Path, text: str | bytes, what: str | None = None) -> Path:
    """Write ``text`` (UTF-8 when a str) to ``path``: a temporary file beside it, fsynced, renamed over the
    old one, the rename fsynced too (a reader never sees half a file; a failed write leaves nothing).
    :class:`PermanentFailure` names ``what`` (default: the file's name) and the directory when it cannot be
    written (retrying does not make a read-only disk writable)."""
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(text.encode() if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the file from its readers
        os.replace(temporary, path)
        temporary = None
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
    except OSError as exc:
        shown = what or path.name
        raise PermanentFailure(
            f"could not write {shown} under {path.parent}: {exc.strerror or type(exc).__name__}"
        ) from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    return path
