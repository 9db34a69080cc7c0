"""A module model whose training can be followed: it talks in every way a
training does (prints, writes to fd 1 as C code does, starts a process that
prints, logs, writes to ``sys.__stdout__``), then waits until the file its
``until`` argument names exists, and talks again.

A test that reads the command's standard error sees the first lines while
the training waits for it: no timing is guessed.
"""

import logging
import os
import subprocess
import sys
import time

from marshmallow import fields

LOG = logging.getLogger("fake_follow")

#: Seconds the training waits for the file before it gives up.
PATIENCE = 120


def get_metadata():
    return {"name": "follow", "description": "A training to follow"}


def get_train_args():
    return {"until": fields.Str(required=True)}


def train(until):
    print("step 1: printed")
    os.write(1, b"step 1: written to fd 1\n")
    subprocess.run(
        [sys.executable, "-c", "print('step 1: printed by a child process')"],
        check=True,
    )
    LOG.info("step 1: logged")
    sys.__stdout__.write("step 1: written to sys.__stdout__\n")
    deadline = time.monotonic() + PATIENCE
    while not os.path.exists(until):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{until} did not appear in {PATIENCE} s")
        time.sleep(0.02)
    print("step 2: printed")
    return {"steps": 2}
