"""A module model whose arguments have short names that are prefixes of
``deepserve call``'s own options: ``--config`` (``--config-file``,
``--config-dir``), ``--n`` (``--no-warm``, ``--nowarm``), ``--d``
(``--debug``, ``--deepaas_method_output``) and ``--mo`` (``--model-name``).
Given after the method, they are the model's, never the command's.
"""

from marshmallow import fields


def get_metadata():
    return {"name": "terse", "description": "Arguments with short names"}


def _args():
    return {
        "config": fields.Str(load_default="none"),
        "n": fields.Int(load_default=1),
        "d": fields.Str(load_default=""),
        "mo": fields.Str(load_default=""),
    }


def get_predict_args():
    return _args()


def get_train_args():
    return _args()


def predict(**kwargs):
    return {"got": kwargs}


def train(**kwargs):
    return {"got": kwargs}
