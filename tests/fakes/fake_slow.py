"""A model whose warm() and predictions take as long as a test says.

``warm()`` waits until the file named by ``FAKE_SLOW_WARM_GATE`` exists
(when that variable is set), so a test decides when the model is warm
without guessing durations. A prediction sleeps ``seconds`` and, when
``marker`` names a directory, first drops a file there: the test then
knows the prediction really runs in a worker. When ``release`` names a
file, the prediction then waits until that file exists.
"""

import logging
import os
import time
from pathlib import Path

from webargs import fields

LOG = logging.getLogger(__name__)


def _wait_for(path):
    deadline = time.monotonic() + 120
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.05)


def warm():
    gate = os.environ.get("FAKE_SLOW_WARM_GATE")
    if gate:
        _wait_for(gate)


def get_predict_args():
    return {
        "seconds": fields.Float(load_default=0.0, metadata={"description": "Sleep"}),
        "marker": fields.Str(
            load_default=None, metadata={"description": "Directory to mark"}
        ),
        "release": fields.Str(
            load_default=None, metadata={"description": "File to wait for"}
        ),
    }


def predict(seconds, marker, release):
    if marker:
        Path(marker, f"{os.getpid()}-{time.monotonic_ns()}").touch()
    if release:
        _wait_for(release)
    LOG.info("sleeping %s s", seconds)
    time.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}
