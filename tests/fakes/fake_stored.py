"""Objects saved in the model store by the tests, one per kind of stored model."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Scaler:
    """A picklable object with several methods (signatures)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.calls = 0

    def predict(self, rows: list[list[float]]) -> list[list[float]]:
        self.calls += 1
        return [[x * self.factor for x in row] for row in rows]

    def count(self, rows: list[Any]) -> dict[str, int]:
        """How many rows, and how many calls this object has served."""
        self.calls += 1
        return {"rows": len(rows), "calls": self.calls}

    def fail(self, data: Any) -> None:
        raise ValueError(f"cannot handle {data!r}")

    def __call__(self, data: Any) -> str:
        return f"called with {data!r}"


class Greeter:
    """A class model: built from its artifacts, predicts from ``data``."""

    def __init__(self, artifacts: dict[str, str]) -> None:
        self.greeting = Path(artifacts["greeting"]).read_text().strip()
        self.names = sorted(p.name for p in Path(artifacts["people"]).iterdir())

    def predict(self, data: Any) -> Any:
        if isinstance(data, bytes):
            return {"bytes": len(data), "greeting": self.greeting}
        if isinstance(data, dict):
            return {k: f"{self.greeting}, {v}" for k, v in data.items()}
        return [f"{self.greeting}, {name}" for name in data or self.names]


class Shouter:
    """A python model: ``load_context`` once, then ``predict(context, input)``."""

    def load_context(self, context: Any) -> None:
        self.suffix = Path(context.artifacts["suffix"]).read_text().strip()

    def predict(self, context: Any, model_input: Any) -> list[str]:
        if isinstance(model_input, bytes):
            model_input = model_input.decode().split()
        return [f"{str(word).upper()}{self.suffix}" for word in model_input]
