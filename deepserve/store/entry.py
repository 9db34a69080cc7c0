"""A stored model: its directory and the information in its ``model.json``.

An entry is the directory ``<root>/<name>/<version>/``::

    model.json           ModelInfo, written last
    saved_model.pkl      the model object (cloudpickle, or joblib for scikit-learn)
    custom_objects.pkl   the custom objects (cloudpickle), when any were given
    artifacts/<key>/...  copies of the artifact files and directories
    code/...             copies of the code paths; put on sys.path at load
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from deepserve.exceptions import StoreError
from deepserve.model import TensorSpec
from deepserve.store.tag import Tag
from deepserve.store.tensors import check_batch_dim, parse_specs, specs_to_json

INFO_FILE = "model.json"
MODEL_FILE = "saved_model.pkl"
CUSTOM_OBJECTS_FILE = "custom_objects.pkl"
ARTIFACTS_DIR = "artifacts"
CODE_DIR = "code"
#: Version of the ``model.json`` layout; bumped on incompatible changes.
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Signature:
    """How one method of a stored model is called.

    :param batchable: whether calls may be merged into one batched call.
    :param batch_dim: the dimension along which inputs are batched.
    :param inputs: the tensors the method takes, declared or inferred at
        save time; ``None`` when unknown.
    :param outputs: the tensors it gives; ``None`` when unknown.
    """

    batchable: bool = False
    batch_dim: int = 0
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None

    @classmethod
    def from_options(cls, method: str, options: Mapping[str, Any]) -> Signature:
        """Build from the user's ``{"batchable": ..., "batch_dim": ...,
        "inputs": [...], "outputs": [...]}``.

        :raises StoreError: naming the method, the option (and the tensor)
            and the problem.
        """
        where = f"signatures: '{method}'"
        if not isinstance(options, Mapping):
            raise StoreError(
                f"{where}: options must be a mapping, not {type(options).__name__}"
            )
        unknown = sorted(str(key) for key in set(options) - set(_OPTIONS))
        if unknown:
            raise StoreError(
                f"{where}: unknown option(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(_OPTIONS)}"
            )
        batchable = options.get("batchable", False)
        batch_dim = options.get("batch_dim", 0)
        if not isinstance(batchable, bool):
            raise StoreError(f"{where}: batchable must be true or false")
        if isinstance(batch_dim, bool) or not isinstance(batch_dim, int):
            raise StoreError(f"{where}: batch_dim must be an integer")
        if batch_dim < 0:
            raise StoreError(f"{where}: batch_dim must be >= 0")
        tensors: dict[str, tuple[TensorSpec, ...] | None] = {}
        for key in ("inputs", "outputs"):
            value = options.get(key)
            specs = None if value is None else parse_specs(f"{where}: {key}", value)
            if specs is not None and batchable:
                check_batch_dim(f"{where}: {key}", specs, batch_dim)
            tensors[key] = specs
        return cls(batchable, batch_dim, tensors["inputs"], tensors["outputs"])

    def to_json(self) -> dict[str, Any]:
        """The JSON form :meth:`from_options` reads; the tensors only when
        known."""
        data: dict[str, Any] = {
            "batchable": self.batchable,
            "batch_dim": self.batch_dim,
        }
        if self.inputs is not None:
            data["inputs"] = specs_to_json(self.inputs)
        if self.outputs is not None:
            data["outputs"] = specs_to_json(self.outputs)
        return data


_OPTIONS = ("batchable", "batch_dim", "inputs", "outputs")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What ``model.json`` records about a stored model."""

    name: str
    version: str
    #: The deepserve module that saved it, e.g. ``deepserve.sklearn``.
    module: str
    #: The framework, e.g. ``sklearn`` or ``cloudpickle``.
    framework: str
    #: Distribution name -> version of the packages the framework relies on.
    framework_versions: Mapping[str, str]
    python_version: str
    deepserve_version: str
    #: When it was saved (UTC, aware).
    created: datetime.datetime
    #: Bytes of the entry's files, ``model.json`` excepted.
    size: int
    labels: Mapping[str, str]
    metadata: Mapping[str, Any]
    signatures: Mapping[str, Signature]
    #: pip requirement specifiers, checked when the model loads.
    requirements: tuple[str, ...]
    #: Artifact key -> path relative to the entry.
    artifacts: Mapping[str, str]
    #: Copied code paths, relative to the entry.
    code_paths: tuple[str, ...]

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"

    def to_json(self) -> dict[str, Any]:
        """The JSON-able form written to ``model.json``."""
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "module": self.module,
            "framework": {
                "name": self.framework,
                "versions": dict(self.framework_versions),
            },
            "python_version": self.python_version,
            "deepserve_version": self.deepserve_version,
            "created": self.created.isoformat(),
            "size": self.size,
            "labels": dict(self.labels),
            "metadata": dict(self.metadata),
            "signatures": {
                method: sig.to_json() for method, sig in self.signatures.items()
            },
            "requirements": list(self.requirements),
            "artifacts": dict(self.artifacts),
            "code_paths": list(self.code_paths),
        }

    @classmethod
    def from_json(cls, data: Any) -> ModelInfo:
        """Read and check what :meth:`to_json` wrote.

        ``model.json`` may come from an imported archive, so nothing in it is
        trusted: paths must stay inside the entry.

        :raises StoreError: naming the field and the problem.
        """
        reader = _Reader(data)
        if reader.get("format", int) != FORMAT:
            raise StoreError(
                f"model.json: unsupported format {data.get('format')!r} "
                f"(this deepserve reads format {FORMAT})"
            )
        framework = reader.get("framework", dict)
        created = reader.get("created", str)
        try:
            when = datetime.datetime.fromisoformat(created)
        except ValueError:
            raise StoreError(f"model.json: created: not a date: {created!r}") from None
        if when.tzinfo is None:
            raise StoreError("model.json: created: the time zone is missing")
        name = reader.get("name", str)
        version = reader.get("version", str)
        Tag(name, version)
        try:
            signatures = {
                str(method): Signature.from_options(str(method), options)
                for method, options in reader.get("signatures", dict).items()
            }
        except StoreError as error:
            raise StoreError(f"model.json: {error}") from None
        return cls(
            name=name,
            version=version,
            module=reader.get("module", str),
            framework=_typed("framework.name", framework.get("name"), str),
            framework_versions=_str_map(
                "framework.versions", framework.get("versions", {})
            ),
            python_version=reader.get("python_version", str),
            deepserve_version=reader.get("deepserve_version", str),
            created=when.astimezone(datetime.UTC),
            size=reader.get("size", int),
            labels=_str_map("labels", reader.get("labels", dict)),
            metadata=reader.get("metadata", dict),
            signatures=signatures,
            requirements=tuple(
                _typed("requirements", item, str)
                for item in reader.get("requirements", list)
            ),
            artifacts={
                key: inside_entry(f"artifacts.{key}", path)
                for key, path in _str_map(
                    "artifacts", reader.get("artifacts", dict)
                ).items()
            },
            code_paths=tuple(
                inside_entry("code_paths", _typed("code_paths", item, str))
                for item in reader.get("code_paths", list)
            ),
        )


class _Reader:
    def __init__(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise StoreError("model.json: not a JSON object")
        self.data = data

    def get(self, field: str, kind: type[Any]) -> Any:
        if field not in self.data:
            raise StoreError(f"model.json: field '{field}' is missing")
        return _typed(field, self.data[field], kind)


def _typed(field: str, value: Any, kind: type[Any]) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise StoreError(
            f"model.json: field '{field}' must be a {kind.__name__}, "
            f"not {type(value).__name__}"
        )
    return value


def _str_map(field: str, value: Any) -> dict[str, str]:
    _typed(field, value, dict)
    for key, item in value.items():
        _typed(f"{field}.{key}", item, str)
    return dict(value)


def inside_entry(field: str, path: str) -> str:
    """Check that ``path`` is relative and stays inside the entry.

    :raises StoreError: for absolute paths, ``..`` or empty paths.
    """
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or "\\" in path or ".." in pure.parts:
        raise StoreError(f"model.json: {field}: path {path!r} leaves the entry")
    return path


class StoredModel:
    """A model in the store: a reference to its directory, with its info.

    It is cheap to create and holds no model object; load the model with the
    ``load_model`` of the module that saved it (``info.module``).
    """

    def __init__(self, path: Path, info: ModelInfo) -> None:
        #: The entry's directory.
        self.path = path
        #: What ``model.json`` records.
        self.info = info

    @classmethod
    def read(cls, path: Path) -> StoredModel:
        """Read the entry at ``path``.

        :raises StoreError: when its ``model.json`` is missing or damaged.
        """
        try:
            data = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"{path}: {INFO_FILE} is missing") from None
        except (OSError, ValueError) as error:
            raise StoreError(f"{path / INFO_FILE}: {error}") from None
        info = ModelInfo.from_json(data)
        if (path.parent.name, path.name) != (info.name, info.version):
            raise StoreError(
                f"{path}: model.json names '{info.tag}', not the entry's directory"
            )
        return cls(path, info)

    @property
    def tag(self) -> str:
        """``name:version``."""
        return self.info.tag

    @property
    def artifacts(self) -> dict[str, str]:
        """Artifact key -> absolute path of the file or directory in the entry."""
        return {
            key: str(self.path.joinpath(rel).resolve())
            for key, rel in self.info.artifacts.items()
        }

    def enable_code_paths(self) -> None:
        """Put the entry's bundled code first on ``sys.path`` (once).

        Bundled modules must be importable before the model is unpickled,
        since pickles refer to classes by module name.
        """
        if not self.info.code_paths:
            return
        code = str((self.path / CODE_DIR).resolve())
        if code not in sys.path:
            sys.path.insert(0, code)

    @functools.cached_property
    def custom_objects(self) -> dict[str, Any]:
        """The custom objects saved with the model, unpickled on first use."""
        path = self.path / CUSTOM_OBJECTS_FILE
        if not path.exists():
            return {}
        import cloudpickle  # type: ignore[import-untyped]

        self.enable_code_paths()
        with path.open("rb") as stream:
            objects = cloudpickle.load(stream)
        if not isinstance(objects, dict):
            raise StoreError(f"{path}: custom objects are not a mapping")
        return objects

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoredModel):
            return NotImplemented
        return (self.path, self.info) == (other.path, other.info)

    def __hash__(self) -> int:
        return hash((self.path, self.info.tag))

    def __repr__(self) -> str:
        return f'StoredModel(tag="{self.tag}", path="{self.path}")'
