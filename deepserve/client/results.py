"""What the client returns: file-like predictions and training records."""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The server's date format for trainings (DEEPaaS's).
DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
#: Training statuses after which nothing changes any more.
FINISHED = frozenset({"done", "error", "cancelled"})


@dataclasses.dataclass(frozen=True)
class FileResult:
    """A prediction answered with something other than JSON.

    :param content: the response body.
    :param content_type: its media type, e.g. ``image/png``.
    :param filename: the name the server gave it (``Content-Disposition``),
        if any.
    :param charset: the charset the server declared, if any.
    """

    content: bytes
    content_type: str
    filename: str | None = None
    charset: str | None = None

    @property
    def text(self) -> str:
        """The content decoded with its charset (UTF-8 when none is given)."""
        return self.content.decode(self.charset or "utf-8")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the content to ``path``.

        :param path: a file, or a directory to write ``filename`` into.
        :returns: the path written.
        :raises ValueError: for a directory when the server gave no filename.
        """
        target = Path(path)
        if target.is_dir():
            if not self.filename:
                raise ValueError(
                    f"The server gave no filename; save to a file path, not "
                    f"the directory {target}"
                )
            # Only the last component: a server cannot make us write elsewhere.
            target = target / Path(self.filename).name
        target.write_bytes(self.content)
        return target


def _date(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.strptime(value, DATE_FORMAT)
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class Training:
    """One training of a model, as the server reported it.

    :param id: its identifier (the API's ``uuid``).
    :param model: the model's name.
    :param status: ``running``, ``done``, ``error`` or ``cancelled``.
    :param args: the arguments it was started with (uploads by name).
    :param output: what the model's ``train`` returned, once ``done``.
    :param message: why it failed or stopped, if it did.
    :param started: when it started.
    :param finished: when it ended, once it has.
    :param raw: the server's record as it came.
    """

    id: str
    model: str
    status: str
    args: Mapping[str, Any]
    output: Any
    message: str | None
    started: datetime.datetime | None
    finished: datetime.datetime | None
    raw: Mapping[str, Any] = dataclasses.field(repr=False)

    @classmethod
    def from_json(cls, model: str, raw: Mapping[str, Any]) -> Training:
        """Read the server's JSON record of a training of ``model``."""
        result = raw.get("result")
        output = result.get("output") if isinstance(result, Mapping) else None
        message = raw.get("message")
        args = raw.get("args")
        return cls(
            id=str(raw.get("uuid", "")),
            model=model,
            status=str(raw.get("status", "")),
            args=dict(args) if isinstance(args, Mapping) else {},
            output=output,
            message=str(message) if message is not None else None,
            started=_date(raw.get("date")),
            finished=_date(raw.get("finish_date")),
            raw=dict(raw),
        )

    @property
    def done(self) -> bool:
        """Whether it has ended, whichever way."""
        return self.status in FINISHED

    @property
    def duration(self) -> datetime.timedelta | None:
        """How long it ran, once it has ended."""
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started
