"""A model reporting the garbage collector state of the process it runs
in: the server's (thread executor) or a worker's (process executor)."""

from __future__ import annotations

import gc


def get_metadata():
    return {"name": "heap"}


def predict(**kwargs):
    return {"frozen": gc.get_freeze_count()}
