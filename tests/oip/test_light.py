"""Which results the Open Inference Protocol converts on the event loop
(oip/service.py: ``light``) and which in a thread."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from deepserve.model import ReturnedFile
from deepserve.oip.service import LIGHT_VALUES, light


@pytest.mark.parametrize(
    "result",
    [
        {"label": "cat", "score": 0.9},
        [1, 2, 3],
        np.zeros((10, 10)),
        {"probs": [[0.1, 0.9]] * 100, "names": ["a", "b"]},
        "short text",
        None,
    ],
)
def test_small_results_are_light(result):
    assert light(result)


@pytest.mark.parametrize(
    "result",
    [
        np.zeros(LIGHT_VALUES + 1),
        {"big": np.zeros((100, 100))},
        [[0.0] * 100] * 100,
        {"a": list(range(3000)), "b": list(range(3000))},
        "x" * (64 * LIGHT_VALUES + 64),
        ReturnedFile(filename="/tmp/out.png"),
        {"file": pathlib.Path("/tmp/out.png")},
        object(),
    ],
)
def test_large_results_and_files_go_to_a_thread(result):
    assert not light(result)
