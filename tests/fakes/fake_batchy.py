"""A model with predict_batch: concurrent predictions arrive merged."""

import itertools
import logging
import os
import time

from aiohttp import web
from marshmallow import fields

batching = {"max_batch_size": 4, "max_latency_ms": 50}

_batches = itertools.count(1)
LOG = logging.getLogger(__name__)


def get_predict_args():
    return {
        "x": fields.Int(required=True),
        "delay": fields.Float(load_default=0.0),
    }


def predict(x, delay):
    return predict_batch([{"x": x, "delay": delay}])[0]


def predict_batch(items):
    """Each result says which batch it was in, its size and its position.

    ``x < 0`` fails that item only (a 400 for -400, a ValueError otherwise);
    ``x == 999`` fails the whole batch; ``x == 998`` returns too few results.
    """
    batch = next(_batches)
    LOG.warning("a batch of %d", len(items))
    time.sleep(max(item["delay"] for item in items))
    if any(item["x"] == 999 for item in items):
        raise RuntimeError("the whole batch failed")
    if any(item["x"] == 998 for item in items):
        return []
    results = []
    for position, item in enumerate(items):
        if item["x"] == -400:
            results.append(web.HTTPBadRequest(reason="negative"))
        elif item["x"] < 0:
            results.append(ValueError(f"bad x {item['x']}"))
        else:
            results.append(
                {
                    "x": item["x"],
                    "double": item["x"] * 2,
                    "batch": f"{os.getpid()}-{batch}",
                    "size": len(items),
                    "position": position,
                }
            )
    return results
