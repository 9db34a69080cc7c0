"""The code that runs inside a worker process.

A worker is spawned with a :class:`~deepserve.executors.messages.WorkerStart`.
It builds its model once from its :class:`~deepserve.loader.ModelRef`,
optionally warms it, reports ready, then answers
:class:`~deepserve.executors.messages.Call` messages in order, one at a
time, until its pipe closes. While a call runs, its request id tags the
worker's log lines, as in the server.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from deepserve import adapters, logs
from deepserve.exceptions import BadModelOutput, DeepserveError, ModelFailed
from deepserve.executors import callspace, frames
from deepserve.executors import capture as output
from deepserve.executors.messages import (
    Answer,
    Call,
    Cancel,
    Failure,
    FromWorker,
    Ready,
    Skipped,
    StartFailed,
    WorkerStart,
)
from deepserve.model import Method, Model

#: How worker processes format the log records of the models they run.
LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [worker %(process)d]%(request_tag)s: "
    "%(message)s"
)


def main(conn: Connection, start: WorkerStart) -> None:
    """Build the model ``start`` names and answer calls on ``conn``."""
    ref, capture, log_level = start.ref, start.capture, start.log_level
    if start.own_group:
        os.setsid()
    _exit_with_parent(start.parent_pid)
    # Ctrl-C reaches the whole process group; the server decides when
    # workers stop, so they must not die mid-call with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if capture is not None:
        output.redirect(capture, log_level)
    else:
        # The server's format: JSON collectors read its stderr, which
        # workers share.
        handler = logs.make_handler(start.log_format)
        if start.log_format == "text":
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.basicConfig(level=log_level, handlers=[handler])
    # Before the model can change it: where this worker's call spaces go,
    # the directory the server looks in to remove them.
    base = os.path.realpath(tempfile.gettempdir())
    try:
        model = adapters.build(ref)
        if start.warm:
            model.call("warm", {})
    except DeepserveError as exc:
        _send(conn, StartFailed(exc))
        return
    except BaseException as exc:
        _send(conn, StartFailed(unexpected(ref.name, exc)))
        return
    if capture is not None:
        output.flush()  # what warm() printed comes before the training's
    # What building and warming made stays for the worker's life: out of
    # the garbage collector's full passes, which would stall calls (see
    # deepserve.server.settle_heap).
    gc.collect()
    gc.freeze()
    _send(conn, Ready(os.getpid()))
    spaces = callspace.Spaces(base)
    try:
        _serve(
            conn, model, ref.name, spaces, output.flush if capture is not None else None
        )
    finally:
        spaces.close()


#: The calls made in a call space of their own (see callspace.py).
SPACED = frozenset({"predict", "predict_batch"})


def run_call(
    model: Model, method: Method, kwargs: Any, spaces: callspace.Spaces
) -> Any:
    """One call; a prediction's temporary files go to a call space."""
    if method not in SPACED:
        return model.call(method, kwargs)
    return spaces.run(method, lambda: model.call(method, kwargs))


def _serve(
    conn: Connection,
    model: Model,
    name: str,
    spaces: callspace.Spaces,
    after_call: Callable[[], None] | None = None,
) -> None:
    """Answer calls in order until the pipe closes.

    Calls may arrive before the previous one is done (the server pipelines
    them); a :class:`Cancel` read before a call starts skips it. Anything
    else ends the worker, as a closed pipe does.
    """
    backlog: collections.deque[Call] = collections.deque()
    cancelled: set[int] = set()
    inbox = frames.Inbox(conn.fileno())

    def take(message: object) -> bool:
        if isinstance(message, Call):
            backlog.append(message)
        elif isinstance(message, Cancel):
            cancelled.add(message.id)
        else:
            return False
        return True

    while True:
        try:
            if not backlog and not take(inbox.get()):
                return
            while inbox.pending():
                if not take(inbox.get()):
                    return
        except (EOFError, OSError):
            return
        if not backlog:
            continue
        call = backlog.popleft()
        if call.id in cancelled:
            cancelled.discard(call.id)
            _send(conn, Skipped())
            continue
        token = logs.REQUEST_ID.set(call.request_id)
        try:
            result = run_call(model, call.method, call.kwargs, spaces)
        except DeepserveError as exc:
            _after(after_call)
            _send(conn, Failure(exc))
            continue
        except BaseException as exc:  # SystemExit from a model, say
            error = unexpected(name, exc)
            _after(after_call)
            _send(conn, Failure(error))
            continue
        finally:
            logs.REQUEST_ID.reset(token)
        _after(after_call)
        try:
            conn.send(Answer(result))
        except (EOFError, OSError):
            return
        except Exception as exc:  # the result does not pickle
            _send(conn, Failure(BadModelOutput(name, f"result cannot be sent: {exc}")))


def _after(hook: Callable[[], None] | None) -> None:
    if hook is not None:
        hook()


def _send(conn: Connection, message: FromWorker) -> None:
    with contextlib.suppress(EOFError, OSError):
        conn.send(message)


def unexpected(model: str, exc: BaseException) -> ModelFailed:
    return ModelFailed(model, type(exc).__name__, str(exc), traceback.format_exc())


def _exit_with_parent(parent_pid: int) -> None:
    """Leave no orphan: exit as soon as the server process is gone."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
