"""The recovery file: training ends the database did not take in time.

When a server stops while its database is locked or unreachable, the ends
of the trainings it could not record are appended here, one JSON object a
line, and flushed to disk; the next :meth:`~deepserve.jobs.JobStore.open`
records them and removes the file. Blocking: called in the store's threads
or at its close.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from deepserve.jobs.records import TrainingEnd
from deepserve.model import json_default

LOG = logging.getLogger(__name__)


def save(path: str, ends: Iterable[TrainingEnd]) -> int:
    """Append ``ends`` to the file at ``path``; how many were written."""
    lines = [
        json.dumps(
            {
                "job_id": end.job_id,
                "status": end.status,
                "result": end.result,
                "message": end.message,
                "when": end.when,
            },
            default=json_default,
        )
        + "\n"
        for end in ends
    ]
    if not lines:
        return 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        data = "".join(lines).encode()
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # after a torn last line, a line of our own
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(lines)


def take(path: str) -> str | None:
    """Move the file at ``path`` aside, atomically, for one server to read:
    ends a stopping replica appends meanwhile start a new file. The name it
    now has, or None when there is none."""
    taken = f"{path}.{os.getpid()}.replaying"
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        return None
    return taken


def load(path: str) -> list[TrainingEnd]:
    """The ends kept at ``path`` (none when there is no file); a line that
    cannot be read is logged and skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    ends = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            ends.append(
                TrainingEnd(
                    job_id=str(raw["job_id"]),
                    status=str(raw["status"]),
                    result=raw.get("result"),
                    message=raw.get("message"),
                    when=float(raw["when"]),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            LOG.error(
                "%s, line %d: not a training end (%s); skipped", path, number, exc
            )
    return ends


def remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)
