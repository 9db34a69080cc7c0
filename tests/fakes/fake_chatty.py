"""A module model whose training talks: prints, writes to its file
descriptors directly, logs, and can be told to run long."""

import logging
import os
import sys
import time

from marshmallow import fields

LOG = logging.getLogger("fake_chatty")


def get_metadata():
    return {"name": "chatty", "description": "A training that talks"}


def get_train_args():
    return {
        "seconds": fields.Float(load_default=0.0),
        "lines": fields.Int(load_default=0),
        "line_size": fields.Int(load_default=10),
        "pidfile": fields.Str(load_default=None, allow_none=True),
        "fail": fields.Bool(load_default=False),
    }


def train(seconds, lines, line_size, pidfile, fail):
    print("epoch 1: printed to stdout")
    print("epoch 1: printed to stderr", file=sys.stderr)
    os.write(1, b"written to fd 1 directly\n")
    LOG.info("a log record at INFO")
    LOG.warning("a log record at WARNING")
    for i in range(lines):
        print(f"line {i:06d} " + "x" * line_size)
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
    print("waiting", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    print("the end")
    if fail:
        raise ValueError("chatty failed")
    return {"lines": lines, "pid": os.getpid()}
