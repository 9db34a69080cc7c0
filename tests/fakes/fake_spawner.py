"""A training that starts a helper process, as the AI4OS demo app starts
tensorboard, and writes the helper's pid to ``pidfile``."""

import os
import subprocess
import sys
import time

from marshmallow import fields


def get_train_args():
    return {
        "pidfile": fields.Str(required=True),
        "seconds": fields.Float(load_default=60.0),
    }


def train(pidfile, seconds):
    helper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(helper.pid))
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(seconds)
    return {"helper": helper.pid}
