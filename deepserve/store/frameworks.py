"""Saving and loading each kind of model: one implementation, four kinds.

:class:`Framework` does everything common to every kind (checking the
arguments, copying artifacts and code, pickling custom objects, recording
versions, checking them at load); each subclass only says what a valid
object is, which signatures it has by default and what ``load_model``
returns. The public modules (:mod:`deepserve.picklable_model`,
:mod:`deepserve.sklearn`, :mod:`deepserve.class_model`,
:mod:`deepserve.python_model`) are thin fronts over the instances in
:data:`FRAMEWORKS`.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

import deepserve
from deepserve.exceptions import InvalidModel, StoreError, WrongModule
from deepserve.store import inference
from deepserve.store import requirements as reqs
from deepserve.store.entry import (
    ARTIFACTS_DIR,
    CODE_DIR,
    CUSTOM_OBJECTS_FILE,
    MODEL_FILE,
    ModelInfo,
    Signature,
    StoredModel,
)
from deepserve.store.local import Store
from deepserve.store.pyfunc import LoadedPythonModel, PythonModelContext
from deepserve.store.tag import Tag, check_name

#: What a signatures argument may be: method -> options, or method names.
Signatures = Mapping[str, Mapping[str, Any]] | Iterable[str]
Artifacts = Mapping[str, str | Path]
PathList = Iterable[str | Path]

LOG = logging.getLogger(__name__)

_ARTIFACT_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class Framework:
    """How one kind of model is saved and loaded.

    :param module: the public module, recorded as the entry's ``module``.
    :param name: the framework's name, recorded in the entry.
    :param packages: distributions whose versions are recorded and checked.
    """

    def __init__(self, module: str, name: str, packages: tuple[str, ...]) -> None:
        self.module = module
        self.name = name
        self.packages = packages

    # -- what subclasses decide ------------------------------------------

    def check(self, obj: Any) -> None:
        """Raise :class:`InvalidModel` when ``obj`` is not this kind."""

    def default_signatures(self, obj: Any) -> dict[str, dict[str, Any]]:
        return {"predict": {}}

    def has_method(self, obj: Any, method: str) -> bool:
        if method == "__call__":
            return callable(obj)
        return callable(getattr(obj, method, None))

    def build(self, obj: Any, model: StoredModel) -> Any:
        """What ``load_model`` returns, given the unpickled object."""
        return obj

    def example_target(
        self, obj: Any, entry: Path, artifacts: Mapping[str, str]
    ) -> Any:
        """What an input example runs through at save time: what
        ``load_model`` would return, built from the entry being written.

        :param entry: the entry's directory, its model already pickled.
        :param artifacts: key -> absolute path of the entry's copy.
        """
        return obj

    def infer(self, obj: Any, method: str) -> inference.Found:
        """The tensors of ``method`` known without an input example;
        ``(None, None)`` when this kind of object tells none.

        :raises CannotInfer: saying why they are not known.
        """
        return None, None

    # -- the common part --------------------------------------------------

    def save(
        self,
        store: Store,
        name: str,
        obj: Any,
        *,
        labels: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        custom_objects: Mapping[str, Any] | None = None,
        signatures: Signatures | None = None,
        artifacts: Artifacts | None = None,
        code_paths: PathList | None = None,
        requirements: Iterable[str] | None = None,
        input_example: Any = None,
    ) -> StoredModel:
        """Save ``obj`` as a new version of ``name`` in ``store``.

        Every argument is checked before anything is written. The tensors
        a signature does not declare are inferred (see :meth:`_infer`).

        :raises BadTag: when ``name`` is not a valid model name.
        :raises InvalidModel: naming the argument and the problem.
        """
        check_name(name)
        self.check(obj)
        sigs = self._signatures(obj, signatures)
        label_map = _labels(labels)
        meta = _metadata(metadata)
        sources = _artifacts(artifacts)
        code = _code_paths(code_paths)
        requirement_list = reqs.check_specifiers(
            [requirements] if isinstance(requirements, str) else requirements or ()
        )
        objects = dict(custom_objects or {})
        if not all(isinstance(key, str) for key in objects):
            raise InvalidModel("custom_objects: keys must be strings")

        def write(entry: Path, tag: Tag, created: datetime.datetime) -> ModelInfo:
            _pickle(obj, entry / MODEL_FILE, "the model")
            if objects:
                _pickle(objects, entry / CUSTOM_OBJECTS_FILE, "custom_objects")
            stored_artifacts = {}
            for key, source in sources.items():
                rel = f"{ARTIFACTS_DIR}/{key}/{source.name}"
                _copy(source, entry / rel, f"artifacts: '{key}'")
                stored_artifacts[key] = rel
            stored_code = []
            for source in code:
                rel = f"{CODE_DIR}/{source.name}"
                _copy(source, entry / rel, "code_paths")
                stored_code.append(rel)
            assert tag.version is not None
            absolute = {
                key: str((entry / rel).resolve())
                for key, rel in stored_artifacts.items()
            }
            inferred = self._infer(tag, obj, sigs, input_example, entry, absolute)
            return ModelInfo(
                name=tag.name,
                version=tag.version,
                module=self.module,
                framework=self.name,
                framework_versions=reqs.versions_of(self.packages),
                python_version=reqs.python_version(),
                deepserve_version=deepserve.__version__,
                created=created,
                size=0,
                labels=label_map,
                metadata=meta,
                signatures=inferred,
                requirements=requirement_list,
                artifacts=stored_artifacts,
                code_paths=tuple(stored_code),
            )

        return store.add(name, write)

    def get(self, store: Store, tag: str | StoredModel) -> StoredModel:
        """The entry named by ``tag``, checked to be of this kind.

        :raises WrongModule: when another module saved it.
        """
        model = tag if isinstance(tag, StoredModel) else store.get(tag)
        if model.info.module != self.module:
            raise WrongModule(model.tag, model.info.module, self.module)
        return model

    def load(self, store: Store, tag: str | StoredModel) -> Any:
        """Load the model named by ``tag`` (see :meth:`load_entry`)."""
        return self.load_entry(self.get(store, tag))

    def load_entry(self, model: StoredModel) -> Any:
        """Load a stored model of this kind.

        Differences in Python, framework or required package versions are
        warned about (:class:`~deepserve.exceptions.StoreWarning`), then the
        entry's code is put on ``sys.path`` and the model unpickled.
        """
        info = model.info
        reqs.check_versions(model.tag, info.python_version, info.framework_versions)
        reqs.check_requirements(model.tag, info.requirements)
        model.enable_code_paths()
        with (model.path / MODEL_FILE).open("rb") as stream:
            obj = cloudpickle.load(stream)
        return self.build(obj, model)

    def _infer(
        self,
        tag: Tag,
        obj: Any,
        sigs: Mapping[str, Signature],
        example: Any,
        entry: Path,
        artifacts: Mapping[str, str],
    ) -> dict[str, Signature]:
        """``sigs``, with the tensors they leave undeclared inferred: from
        ``example`` run once through each method, else (scikit-learn) from
        the object. Inference never fails a save: what cannot be inferred
        stays ``None``, with a warning saying why."""
        result = dict(sigs)
        wanted = [m for m, s in sigs.items() if s.inputs is None or s.outputs is None]
        if not wanted:
            return result
        target = None
        if example is not None:
            try:
                target = self.example_target(obj, entry, artifacts)
            except Exception as error:
                LOG.warning(
                    "%s: tensors not inferred: building the model to run the "
                    "input example raised %s: %s",
                    tag,
                    type(error).__name__,
                    error,
                )
        for method in wanted:
            sig = sigs[method]
            why = []
            found: inference.Found = (None, None)
            if target is not None:
                func = target if method == "__call__" else getattr(target, method)
                try:
                    found = inference.from_example(func, example, sig.batch_dim)
                except inference.CannotInfer as error:
                    why.append(str(error))
            if found == (None, None):
                try:
                    found = self.infer(obj, method)
                except inference.CannotInfer as error:
                    why.append(str(error))
            candidate = dataclasses.replace(
                sig,
                inputs=found[0] if sig.inputs is None else sig.inputs,
                outputs=found[1] if sig.outputs is None else sig.outputs,
            )
            try:  # what was inferred must suit a batchable signature too
                Signature.from_options(method, candidate.to_json())
            except StoreError as error:
                why.append(f"what was inferred does not fit: {error.message}")
                candidate = sig
            if why:
                LOG.warning(
                    "%s: signature '%s': tensors not inferred%s: %s",
                    tag,
                    method,
                    "" if candidate == sig else " from the input example",
                    "; ".join(why),
                )
            result[method] = candidate
        return result

    def _signatures(
        self, obj: Any, signatures: Signatures | None
    ) -> dict[str, Signature]:
        if signatures is None:
            wanted: Mapping[str, Any] = self.default_signatures(obj)
        elif isinstance(signatures, str):
            wanted = {signatures: {}}
        elif isinstance(signatures, Mapping):
            wanted = signatures
        else:
            wanted = {key: {} for key in signatures}
        if not wanted:
            raise InvalidModel("signatures: name at least one method")
        result = {}
        for method, options in wanted.items():
            if not isinstance(method, str) or not method:
                raise InvalidModel(f"signatures: {method!r} is not a method name")
            if not self.has_method(obj, method):
                kind = obj if isinstance(obj, type) else type(obj)
                raise InvalidModel(
                    f"signatures: the model ({kind.__qualname__}) has no method "
                    f"'{method}'"
                )
            try:
                result[method] = Signature.from_options(method, options)
            except StoreError as error:
                raise InvalidModel(error.message) from None
        return result


class PicklableFramework(Framework):
    """Any object cloudpickle can pickle, called through named methods."""

    def default_signatures(self, obj: Any) -> dict[str, dict[str, Any]]:
        if callable(getattr(obj, "predict", None)):
            return {"predict": {}}
        if callable(obj):
            return {"__call__": {}}
        raise InvalidModel(
            f"the model ({type(obj).__qualname__}) has neither 'predict' nor "
            "'__call__'; name its methods with signatures="
        )


class SklearnFramework(Framework):
    """scikit-learn estimators."""

    def check(self, obj: Any) -> None:
        try:
            from sklearn.base import BaseEstimator  # type: ignore[import-untyped]
        except ImportError:
            raise InvalidModel(
                "scikit-learn is not installed (pip install 'deepserve[sklearn]')"
            ) from None
        if not isinstance(obj, BaseEstimator):
            raise InvalidModel(
                f"not a scikit-learn estimator: {type(obj).__qualname__}; "
                "use deepserve.picklable_model for other objects"
            )

    def infer(self, obj: Any, method: str) -> inference.Found:
        return inference.from_estimator(obj, method)


class ClassModelFramework(Framework):
    """Classes built as ``cls(artifacts)`` that ``predict(data)``."""

    def check(self, obj: Any) -> None:
        if not isinstance(obj, type):
            raise InvalidModel(
                f"a class model is saved as its class, not an instance "
                f"(got a {type(obj).__qualname__})"
            )
        try:
            inspect.signature(obj).bind(artifacts={})
        except TypeError:
            raise InvalidModel(
                f"{obj.__qualname__}.__init__ must accept an 'artifacts' argument"
            ) from None
        except ValueError:
            pass  # no signature to inspect (a builtin base): trust it

    def build(self, obj: Any, model: StoredModel) -> Any:
        return obj(artifacts=model.artifacts)

    def example_target(
        self, obj: Any, entry: Path, artifacts: Mapping[str, str]
    ) -> Any:
        return obj(artifacts=dict(artifacts))


class PythonModelFramework(Framework):
    """Objects with ``load_context(context)`` and ``predict(context, input)``."""

    def check(self, obj: Any) -> None:
        if isinstance(obj, type):
            raise InvalidModel(
                f"a python model is saved as an instance, not a class "
                f"(call {obj.__qualname__}() first)"
            )
        if not callable(getattr(obj, "predict", None)):
            raise InvalidModel(
                f"a python model needs predict(context, model_input); "
                f"{type(obj).__qualname__} has none"
            )

    def has_method(self, obj: Any, method: str) -> bool:
        # The loaded wrapper exposes predict only.
        return method == "predict"

    def build(self, obj: Any, model: StoredModel) -> Any:
        return self._loaded(obj, model.artifacts)

    def example_target(
        self, obj: Any, entry: Path, artifacts: Mapping[str, str]
    ) -> Any:
        # The pickled copy: load_context leaves the caller's object as it was.
        with (entry / MODEL_FILE).open("rb") as stream:
            return self._loaded(cloudpickle.load(stream), artifacts)

    def _loaded(self, obj: Any, artifacts: Mapping[str, str]) -> LoadedPythonModel:
        context = PythonModelContext(artifacts=artifacts)
        load_context = getattr(obj, "load_context", None)
        if callable(load_context):
            load_context(context)
        return LoadedPythonModel(obj, context)


PICKLABLE = PicklableFramework(
    "deepserve.picklable_model", "cloudpickle", ("cloudpickle",)
)
SKLEARN = SklearnFramework(
    "deepserve.sklearn", "sklearn", ("scikit-learn", "numpy", "scipy", "cloudpickle")
)
CLASS_MODEL = ClassModelFramework("deepserve.class_model", "python", ("cloudpickle",))
PYTHON_MODEL = PythonModelFramework(
    "deepserve.python_model", "python", ("cloudpickle",)
)

#: Saving module -> its framework.
FRAMEWORKS: Mapping[str, Framework] = {
    f.module: f for f in (PICKLABLE, SKLEARN, CLASS_MODEL, PYTHON_MODEL)
}


def load(model: StoredModel) -> Any:
    """Load any stored model with the framework that saved it.

    :raises StoreError: when no framework here knows its module.
    """
    framework = FRAMEWORKS.get(model.info.module)
    if framework is None:
        raise StoreError(
            f"Model '{model.tag}' was saved by {model.info.module}, "
            "which this deepserve does not know"
        )
    return framework.load_entry(model)


# -- argument checks -------------------------------------------------------


def _labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    result = dict(labels or {})
    for key, value in result.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidModel(
                f"labels: {key!r}: labels map strings to strings, "
                f"not {type(value).__name__}"
            )
    return result


def _metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    result = dict(metadata or {})
    for key, value in result.items():
        if not isinstance(key, str):
            raise InvalidModel(f"metadata: key {key!r} is not a string")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise InvalidModel(
                f"metadata: '{key}' cannot be stored as JSON: {error}"
            ) from None
    return result


def _artifacts(artifacts: Artifacts | None) -> dict[str, Path]:
    result = {}
    for key, source in (artifacts or {}).items():
        if not isinstance(key, str) or not _ARTIFACT_KEY.fullmatch(key):
            raise InvalidModel(
                f"artifacts: key {key!r} may hold only letters, digits, '_', "
                "'-' and '.', and may not start with '.' or '-'"
            )
        path = Path(source).expanduser()
        if not path.exists():
            raise InvalidModel(f"artifacts: '{key}': {path} does not exist")
        result[key] = path.resolve()
    return result


def _code_paths(code_paths: PathList | None) -> list[Path]:
    result: list[Path] = []
    if isinstance(code_paths, str | Path):
        code_paths = [code_paths]
    for source in code_paths or ():
        path = Path(source).expanduser()
        if not path.exists():
            raise InvalidModel(f"code_paths: {path} does not exist")
        path = path.resolve()
        if any(p.name == path.name for p in result):
            raise InvalidModel(
                f"code_paths: two paths are named '{path.name}'; they would "
                "overwrite each other in the entry"
            )
        result.append(path)
    return result


def _pickle(obj: Any, path: Path, what: str) -> None:
    try:
        with path.open("wb") as stream:
            cloudpickle.dump(obj, stream)
    except Exception as error:
        raise InvalidModel(f"cannot pickle {what}: {error}") from error


def _copy(source: Path, dest: Path, what: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        if source.is_dir():
            # Links are followed: the entry holds plain copies, so it stays
            # valid when what they pointed to changes or is not exported.
            shutil.copytree(
                source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(source, dest)
    except (OSError, shutil.Error) as error:
        raise InvalidModel(f"{what}: cannot copy {source}: {error}") from None
