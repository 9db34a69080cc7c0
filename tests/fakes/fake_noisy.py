"""A module model that is noisy on import, as models built on big libraries
are: it prints, writes to its file descriptors directly (as C code does),
logs and warns before any method is called, and again while its argument
fields are read.

Its ``predict`` has an argument called ``help``, so ``--help`` is the
model's there and only ``-h`` asks for the help.
"""

import logging
import os
import sys
import warnings

from marshmallow import fields

LOG = logging.getLogger("fake_noisy")

print("noisy: printed on import")
print("noisy: printed to stderr on import", file=sys.stderr)
os.write(1, b"noisy: written to fd 1 on import\n")
os.write(2, b"noisy: written to fd 2 on import\n")
LOG.warning("noisy: a log record on import")
logging.getLogger().info("noisy: a root log record on import")
warnings.warn("noisy: a warning on import", UserWarning, stacklevel=1)


def get_metadata():
    return {"name": "noisy", "description": "Talks when imported"}


def get_predict_args():
    print("noisy: reading the predict arguments")
    warnings.warn("noisy: a warning while reading the arguments", stacklevel=1)
    return {
        "text": fields.Str(load_default="hi"),
        "help": fields.Str(load_default=None, allow_none=True),
    }


def predict(text, help):
    if text == "exit":  # as a script's own argument parser does
        sys.exit(3)
    return {"text": text, "help": help}


def get_train_args():
    os.write(2, b"noisy: reading the train arguments\n")
    return {"epochs": fields.Int(load_default=1)}


def train(epochs):
    return {"epochs": epochs}
