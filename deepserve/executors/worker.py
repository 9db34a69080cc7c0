"""The code that runs inside a worker process.

A worker builds its model once from a :class:`~deepserve.loader.ModelRef`,
optionally warms it, reports ready, then answers
``(id, method, kwargs, request_id)`` messages in order, one at a time, until
its pipe closes. While a call runs, its request id tags the worker's log
lines, as in the server.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from deepserve import adapters, logs
from deepserve.exceptions import BadModelOutput, DeepserveError, ModelFailed
from deepserve.loader import ModelRef
from deepserve.model import Method, Model
from deepserve.settings import LogFormat

READY = "ready"
OK = "ok"
ERR = "err"
#: The answer to a call cancelled before it started.
SKIPPED = "skipped"
#: A message asking to skip a call that has not started: ``(CANCEL, id)``.
CANCEL = "cancel"


#: How worker processes format the log records of the models they run.
LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [worker %(process)d]%(request_tag)s: "
    "%(message)s"
)


def main(
    conn: Connection,
    ref: ModelRef,
    warm: bool,
    parent_pid: int,
    log_level: int,
    log_format: LogFormat = "text",
) -> None:
    _exit_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group; the server decides when
    # workers stop, so they must not die mid-call with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The server's format: JSON collectors read its stderr, which workers share.
    handler = logs.make_handler(log_format)
    if log_format == "text":
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=log_level, handlers=[handler])
    try:
        model = adapters.build(ref)
        if warm:
            model.call("warm", {})
    except DeepserveError as exc:
        _send(conn, ERR, exc)
        return
    except BaseException as exc:
        _send(conn, ERR, _unexpected(ref.name, exc))
        return
    _send(conn, READY, os.getpid())
    _serve(conn, model, ref.name)


def _serve(conn: Connection, model: Model, name: str) -> None:
    """Answer calls in order until the pipe closes.

    Calls may arrive before the previous one is done (the server pipelines
    them); a ``(CANCEL, id)`` message read before a call starts skips it.
    """
    backlog: collections.deque[tuple[int, Method, Any, str | None]] = (
        collections.deque()
    )
    cancelled: set[int] = set()

    def take(message: Any) -> bool:
        if message is None:
            return False
        if message[0] == CANCEL:
            cancelled.add(message[1])
        else:
            backlog.append(message)
        return True

    while True:
        try:
            if not backlog and not take(conn.recv()):
                return
            while conn.poll():
                if not take(conn.recv()):
                    return
        except (EOFError, OSError):
            return
        if not backlog:
            continue
        call_id, method, kwargs, request_id = backlog.popleft()
        if call_id in cancelled:
            cancelled.discard(call_id)
            _send(conn, SKIPPED, None)
            continue
        token = logs.REQUEST_ID.set(request_id)
        try:
            result = model.call(method, kwargs)
        except DeepserveError as exc:
            _send(conn, ERR, exc)
            continue
        except BaseException as exc:  # SystemExit from a model, say
            _send(conn, ERR, _unexpected(name, exc))
            continue
        finally:
            logs.REQUEST_ID.reset(token)
        try:
            conn.send((OK, result))
        except (EOFError, OSError):
            return
        except Exception as exc:  # the result does not pickle
            _send(conn, ERR, BadModelOutput(name, f"result cannot be sent: {exc}"))


def _send(conn: Connection, kind: str, payload: Any) -> None:
    with contextlib.suppress(EOFError, OSError):
        conn.send((kind, payload))


def _unexpected(model: str, exc: BaseException) -> ModelFailed:
    return ModelFailed(model, type(exc).__name__, str(exc), traceback.format_exc())


def _exit_with_parent(parent_pid: int) -> None:
    """Leave no orphan: exit as soon as the server process is gone."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
