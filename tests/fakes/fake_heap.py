"""A model reporting the server's garbage collector state (run it with the
thread executor, so that it runs in the server's own process)."""

from __future__ import annotations

import gc


def get_metadata():
    return {"name": "heap"}


def predict(**kwargs):
    return {"frozen": gc.get_freeze_count()}
