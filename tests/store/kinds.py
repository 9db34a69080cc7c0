"""Toy models of every kind, importable by reference (``tests.store.kinds``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deepserve.python_model import PythonModel, PythonModelContext


class Doubler:
    """A picklable model with ``predict`` and another method."""

    def __init__(self, factor: int = 2) -> None:
        self.factor = factor

    def predict(self, data: list[int]) -> list[int]:
        return [self.factor * x for x in data]

    def negate(self, data: list[int]) -> list[int]:
        return [-x for x in data]


class Incrementer:
    """A picklable model called as a function."""

    def __call__(self, x: int) -> int:
        return x + 1


class Lookup:
    """A class model reading a file artifact and a directory artifact."""

    def __init__(self, artifacts: dict[str, str]) -> None:
        self.artifacts = artifacts
        self.table = json.loads(Path(artifacts["table"]).read_text())
        self.words = sorted(p.name for p in Path(artifacts["vocab"]).iterdir())

    def predict(self, data: list[str]) -> list[Any]:
        return [self.table.get(item, self.words) for item in data]


class Tokenizing(PythonModel):
    """A python model that loads its vocabulary in load_context."""

    def __init__(self) -> None:
        self.loads = 0
        self.vocab: list[str] = []

    def load_context(self, context: PythonModelContext) -> None:
        self.loads += 1
        self.vocab = Path(context.artifacts["vocab"]).read_text().split()

    def predict(self, context: PythonModelContext, model_input: str) -> list[int]:
        return [self.vocab.index(w) for w in model_input.split() if w in self.vocab]


class Scorer:
    """A class model whose output is a mapping, read from a file artifact."""

    def __init__(self, artifacts: dict[str, str]) -> None:
        self.offset = float(Path(artifacts["offset"]).read_text())

    def predict(self, data: list[list[float]]) -> dict[str, Any]:
        return {
            "score": [sum(row) + self.offset for row in data],
            "label": ["high" if sum(row) > 1 else "low" for row in data],
        }
