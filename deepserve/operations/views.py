"""Models, trainings and their output as clients see them (DEEPaaS's shapes).

Plain JSON-ready values, the same for every protocol: each layer adds its
own links or framing around them.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from deepserve.jobs.records import LogPage, TrainingJob
from deepserve.model import Model, UploadedFile

#: DEEPaaS's date format for trainings.
DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def metadata_view(
    model: Model, *, links: Sequence[Mapping[str, str]] = ()
) -> dict[str, Any]:
    """A model's metadata: its ``id`` and ``name``, ``links`` when given,
    then what the model itself says (which may replace them). Calls the
    model's ``metadata()``: model code."""
    meta: dict[str, Any] = {"id": model.name, "name": model.name}
    if links:
        meta["links"] = [dict(link) for link in links]
    meta.update(model.metadata())
    return meta


def record_args(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A training's arguments as its record shows them: uploads by name,
    never by temporary path."""
    recorded: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, UploadedFile):
            recorded[key] = {
                "name": value.name,
                "original_filename": value.original_filename,
                "content_type": value.content_type,
            }
        else:
            recorded[key] = value
    return recorded


def _date(value: datetime.datetime) -> str:
    # DEEPaaS's dates are the server's local time, without a zone.
    return value.astimezone().strftime(DATE_FORMAT)


def training_view(job: TrainingJob) -> dict[str, Any]:
    """A training in DEEPaaS's JSON shape, plus ``duration``."""
    view: dict[str, Any] = {
        "uuid": job.id,
        "date": _date(job.created),
        "status": job.status,
        "args": job.args,
    }
    if job.finished is not None and job.duration is not None:
        view["duration"] = str(job.duration)
        view["finish_date"] = _date(job.finished)
    if job.status == "done" and job.finished is not None:
        view["result"] = {
            "output": job.result,
            "finish_date": _date(job.finished),
            "duration": str(job.duration),
        }
    elif job.status != "running" and job.message is not None:
        view["message"] = job.message
    return view


def logs_view(page: LogPage) -> dict[str, Any]:
    """A training's output after a cursor; ``next`` is the next cursor."""
    return {
        "uuid": page.job.id,
        "status": page.job.status,
        "next": page.next,
        "truncated": page.dropped > 0,
        "dropped": page.dropped,
        "logs": [
            {
                "seq": e.seq,
                "stream": e.stream,
                "time": datetime.datetime.fromtimestamp(
                    e.time, datetime.UTC
                ).isoformat(),
                "level": e.level,
                "text": e.text,
            }
            for e in page.entries
        ],
    }
