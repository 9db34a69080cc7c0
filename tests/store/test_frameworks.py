"""Saving and loading each kind of model, and what every kind shares."""

from __future__ import annotations

import json
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from deepserve import class_model, picklable_model, python_model
from deepserve import sklearn as ds_sklearn
from deepserve.exceptions import BadTag, InvalidModel, StoreWarning, WrongModule
from deepserve.store import Signature, Store, StoredModel
from deepserve.store.frameworks import load
from tests.store.conftest import run_python
from tests.store.kinds import Doubler, Incrementer, Lookup, Tokenizing


def artifacts_on_disk(tmp_path: Path) -> dict[str, Path]:
    table = tmp_path / "src" / "table.json"
    table.parent.mkdir()
    table.write_text(json.dumps({"a": 1, "b": 2}))
    vocab = tmp_path / "src" / "vocab"
    (vocab / "sub").mkdir(parents=True)
    for word in ("cat", "dog"):
        (vocab / word).write_text(word)
    (vocab / "sub" / "deep.txt").write_text("deep")
    return {"table": table, "vocab": vocab}


# -- picklable ---------------------------------------------------------------


def test_picklable_round_trip_with_everything(store: Store) -> None:
    saved = picklable_model.save_model(
        "doubler",
        Doubler(3),
        labels={"owner": "nlp", "stage": "dev"},
        metadata={"acc": 0.93, "cv": [1, 2], "dataset": "20210820"},
        custom_objects={"tokenizer": str.split, "config": {"n": 1}},
        store=store,
    )
    assert saved.tag.startswith("doubler:")
    info = store.get(saved.tag).info
    assert info.module == "deepserve.picklable_model"
    assert info.framework == "cloudpickle"
    assert "cloudpickle" in info.framework_versions
    assert info.python_version == ".".join(map(str, sys.version_info[:3]))
    assert info.labels == {"owner": "nlp", "stage": "dev"}
    assert info.metadata == {"acc": 0.93, "cv": [1, 2], "dataset": "20210820"}
    assert info.signatures == {"predict": Signature(batchable=False, batch_dim=0)}
    assert (
        info.created.tzinfo is not None
        and info.created.utcoffset().total_seconds() == 0
    )
    assert info.size == sum(
        p.stat().st_size
        for p in saved.path.rglob("*")
        if p.is_file() and p.name != "model.json"
    )
    assert info.size > 0

    fresh = picklable_model.get(saved.tag, store=store)
    assert fresh.custom_objects["tokenizer"]("a b") == ["a", "b"]
    assert fresh.custom_objects["config"] == {"n": 1}
    model = picklable_model.load_model(saved.tag, store=store)
    assert isinstance(model, Doubler)
    assert model.predict([1, 2]) == [3, 6]
    assert picklable_model.load_model(fresh, store=store).factor == 3


def test_picklable_signatures(store: Store) -> None:
    called = picklable_model.save_model("inc", Incrementer(), store=store)
    assert list(called.info.signatures) == ["__call__"]
    assert called.custom_objects == {}
    assert picklable_model.load_model(called, store=store)(1) == 2

    named = picklable_model.save_model(
        "doubler",
        Doubler(),
        signatures={"predict": {"batchable": True, "batch_dim": 1}, "negate": {}},
        store=store,
    )
    assert store.get(named.tag).info.signatures == {
        "predict": Signature(batchable=True, batch_dim=1),
        "negate": Signature(),
    }
    as_list = picklable_model.save_model(
        "doubler", Doubler(), signatures=["negate"], store=store
    )
    assert list(as_list.info.signatures) == ["negate"]


@pytest.mark.parametrize(
    ("obj", "kwargs", "message"),
    [
        (Doubler(), {"signatures": ["predict", "missing"]}, "no method 'missing'"),
        (Doubler(), {"signatures": ["__call__"]}, "no method '__call__'"),
        (
            Doubler(),
            {"signatures": {"predict": {"batchable": "yes"}}},
            "batchable must be",
        ),
        (
            Doubler(),
            {"signatures": {"predict": {"batch": 1}}},
            "unknown option(s) batch",
        ),
        (
            Doubler(),
            {"signatures": {"predict": {"batch_dim": -1}}},
            "batch_dim must be >= 0",
        ),
        (Doubler(), {"signatures": []}, "at least one method"),
        (object(), {}, "neither 'predict' nor '__call__'"),
        (Doubler(), {"labels": {"stage": 1}}, "labels: 'stage'"),
        (
            Doubler(),
            {"metadata": {"when": object()}},
            "metadata: 'when' cannot be stored",
        ),
        (Doubler(), {"metadata": {"x": float("nan")}}, "metadata: 'x'"),
        (Doubler(), {"artifacts": {"../up": "."}}, "artifacts: key '../up'"),
        (Doubler(), {"artifacts": {"w": "/no/such/file"}}, "does not exist"),
        (Doubler(), {"code_paths": ["/no/such/dir"]}, "code_paths: /no/such/dir"),
        (Doubler(), {"requirements": ["numpy>>>1"]}, "requirements: 'numpy>>>1'"),
        (
            Doubler(),
            {"custom_objects": {"lock": __import__("threading").Lock()}},
            "cannot pickle custom_objects",
        ),
        (lambda: __import__("threading").Lock(), {}, None),
    ],
)
def test_bad_saves_fail_clearly_and_write_nothing(
    store: Store, obj: Any, kwargs: dict[str, Any], message: str | None
) -> None:
    if message is None:  # a picklable callable is fine: the control case
        picklable_model.save_model("bad", obj, store=store, **kwargs)
        assert len(store.list()) == 1
        return
    with pytest.raises(InvalidModel) as caught:
        picklable_model.save_model("bad", obj, store=store, **kwargs)
    assert message in str(caught.value)
    assert store.list() == []
    tmp = store.root / ".tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def test_bad_names_are_rejected(store: Store) -> None:
    with pytest.raises(BadTag, match="must be lowercase"):
        picklable_model.save_model("Doubler", Doubler(), store=store)
    with pytest.raises(BadTag, match="cannot hold ':'"):
        picklable_model.save_model("doubler:v1", Doubler(), store=store)
    assert store.list() == []


def test_get_refuses_another_modules_entry(store: Store, tmp_path: Path) -> None:
    saved = picklable_model.save_model("doubler", Doubler(), store=store)
    with pytest.raises(WrongModule) as caught:
        class_model.get(saved.tag, store=store)
    assert str(caught.value) == (
        f"Model '{saved.tag}' was saved with deepserve.picklable_model, not "
        "deepserve.class_model; load it with deepserve.picklable_model.load_model"
    )
    for module in (ds_sklearn, python_model):
        with pytest.raises(WrongModule):
            module.load_model("doubler", store=store)
    assert picklable_model.get("doubler", store=store) == saved


# -- scikit-learn ------------------------------------------------------------


def test_sklearn_iris_round_trip(store: Store) -> None:
    from sklearn import datasets, svm

    iris = datasets.load_iris()
    clf = svm.SVC(gamma="scale").fit(iris.data, iris.target)
    saved = ds_sklearn.save_model("iris_clf", clf, store=store)
    info = saved.info
    assert info.module == "deepserve.sklearn"
    assert info.framework == "sklearn"
    assert set(info.framework_versions) >= {"scikit-learn", "numpy", "scipy"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = ds_sklearn.load_model("iris_clf:latest", store=store)
    assert list(loaded.predict(iris.data[:5])) == list(clf.predict(iris.data[:5]))
    assert ds_sklearn.get("iris_clf", store=store) == saved


def test_sklearn_refuses_other_objects(store: Store) -> None:
    with pytest.raises(InvalidModel, match="not a scikit-learn estimator: Doubler"):
        ds_sklearn.save_model("x", Doubler(), store=store)


def test_sklearn_warns_on_a_version_mismatch(store: Store) -> None:
    from sklearn.linear_model import LinearRegression

    saved = ds_sklearn.save_model(
        "lr", LinearRegression().fit([[0], [1]], [0, 1]), store=store
    )
    data = json.loads((saved.path / "model.json").read_text())
    data["framework"]["versions"]["scikit-learn"] = "0.1.0"
    (saved.path / "model.json").write_text(json.dumps(data))
    with pytest.warns(
        StoreWarning, match=r"saved with scikit-learn 0\.1\.0; .* is installed"
    ):
        model = ds_sklearn.load_model("lr", store=store)
    assert round(float(model.predict([[2]])[0])) == 2


# -- class models ------------------------------------------------------------


def test_class_model_artifacts_are_copied(store: Store, tmp_path: Path) -> None:
    sources = artifacts_on_disk(tmp_path)
    saved = class_model.save_model("lookup", Lookup, artifacts=sources, store=store)
    assert saved.info.artifacts == {
        "table": "artifacts/table/table.json",
        "vocab": "artifacts/vocab/vocab",
    }
    # The entry holds copies: changing the originals changes nothing.
    sources["table"].write_text("{}")
    (sources["vocab"] / "cat").unlink()
    model = class_model.load_model(saved.tag, store=store)
    assert isinstance(model, Lookup)
    assert model.predict(["a", "zzz"]) == [1, ["cat", "dog", "sub"]]
    for key, path in model.artifacts.items():
        assert Path(path).is_absolute()
        assert Path(path).is_relative_to(saved.path.resolve()), key
    assert (Path(model.artifacts["vocab"]) / "sub" / "deep.txt").read_text() == "deep"

    fetched = class_model.fetch_artifacts(saved.tag, ["table"], store=store)
    assert fetched == {"table": model.artifacts["table"]}
    assert Lookup(artifacts=class_model.fetch_artifacts(saved, store=store)).predict(
        ["b"]
    ) == [2]
    with pytest.raises(
        InvalidModel, match="no artifact 'weights' in this model; it has: table, vocab"
    ):
        class_model.fetch_artifacts(saved, ["weights"], store=store)


def test_class_model_must_be_a_class_taking_artifacts(store: Store) -> None:
    class NoArtifacts:
        def __init__(self) -> None:
            pass

        def predict(self, data: Any) -> Any:
            return data

    with pytest.raises(InvalidModel, match="saved as its class, not an instance"):
        class_model.save_model("c", Doubler(), store=store)
    with pytest.raises(InvalidModel, match="must accept an 'artifacts' argument"):
        class_model.save_model("c", NoArtifacts, store=store)
    with pytest.raises(InvalidModel, match="no method 'predict'"):
        class_model.save_model("c", dict, signatures=["predict"], store=store)


# -- python models -----------------------------------------------------------


def test_python_model_loads_its_context_once(store: Store, tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("hello big world")
    saved = python_model.save_model(
        "tok", Tokenizing(), artifacts={"vocab": vocab}, store=store
    )
    assert saved.info.module == "deepserve.python_model"
    loaded = python_model.load_model("tok", store=store)
    assert isinstance(loaded, python_model.LoadedPythonModel)
    assert loaded.predict("world hello unknown") == [2, 0]
    assert loaded.predict("big") == [1]
    inner = loaded.unwrap()
    assert isinstance(inner, Tokenizing)
    assert inner.loads == 1
    assert Path(loaded.context.artifacts["vocab"]).is_relative_to(saved.path.resolve())


def test_python_model_checks(store: Store) -> None:
    with pytest.raises(InvalidModel, match="as an instance, not a class"):
        python_model.save_model("p", Tokenizing, store=store)
    with pytest.raises(InvalidModel, match="needs predict"):
        python_model.save_model("p", Incrementer(), store=store)
    with pytest.raises(InvalidModel, match="no method 'transform'"):
        python_model.save_model(
            "p", Tokenizing(), signatures=["transform"], store=store
        )


def test_load_dispatches_on_the_saving_module(store: Store, tmp_path: Path) -> None:
    sources = artifacts_on_disk(tmp_path)
    saved = class_model.save_model("lookup", Lookup, artifacts=sources, store=store)
    assert isinstance(load(saved), Lookup)
    assert isinstance(
        load(picklable_model.save_model("d", Doubler(), store=store)), Doubler
    )


# -- requirements and code ---------------------------------------------------


def test_requirements_are_checked_at_load(store: Store) -> None:
    saved = picklable_model.save_model(
        "req",
        Doubler(),
        requirements=[
            "cloudpickle>=1",
            "cloudpickle<1",
            "surely-not-installed-dist==1.0",
            "pytest; python_version < '3'",
        ],
        store=store,
    )
    assert saved.info.requirements[0] == "cloudpickle>=1"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        picklable_model.load_model(saved, store=store)
    messages = sorted(
        str(w.message) for w in caught if issubclass(w.category, StoreWarning)
    )
    assert len(messages) == 2, messages
    assert "requires 'cloudpickle<1', but cloudpickle" in messages[0]
    assert (
        "requires 'surely-not-installed-dist==1.0', which is not installed"
        in messages[1]
    )


def test_python_version_mismatch_warns(store: Store) -> None:
    saved = picklable_model.save_model("py", Doubler(), store=store)
    data = json.loads((saved.path / "model.json").read_text())
    data["python_version"] = "2.7.18"
    (saved.path / "model.json").write_text(json.dumps(data))
    with pytest.warns(StoreWarning, match="saved with Python 2.7.18"):
        picklable_model.load_model(saved.tag, store=store)


def test_code_paths_are_importable_in_a_fresh_interpreter(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    package = src / "shoutpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "text.py").write_text("def shout(s):\n    return s.upper() + '!'\n")
    (src / "shoutmodel.py").write_text(
        textwrap.dedent(
            """
            from shoutpkg.text import shout

            class Shouter:
                def __init__(self, artifacts):
                    self.artifacts = artifacts

                def predict(self, data):
                    return shout(data)
            """
        )
    )
    monkeypatch.syspath_prepend(str(src))
    import shoutmodel

    saved = class_model.save_model(
        "shouter",
        shoutmodel.Shouter,
        code_paths=[src / "shoutmodel.py", package],
        custom_objects={"fn": shoutmodel.shout},
        store=store,
    )
    assert sorted(saved.info.code_paths) == ["code/shoutmodel.py", "code/shoutpkg"]
    for name in ("shoutmodel", "shoutpkg", "shoutpkg.text"):
        monkeypatch.delitem(sys.modules, name)
    # The sources are gone: only the entry's copies can be imported.
    (src / "shoutmodel.py").unlink()
    out = run_python(
        "import sys; from deepserve import class_model, models; from deepserve.store import Store;"
        "store = Store(sys.argv[1]);"
        "print(class_model.load_model(sys.argv[2], store=store).predict('hi'));"
        "print(models.get(sys.argv[2], store=store).custom_objects['fn']('x'))",
        str(store.root),
        saved.tag,
    )
    assert out.stdout.split() == ["HI!", "X!"]
    # Without the entry's code the model's class cannot be found.
    failed = run_python(
        "import sys, cloudpickle; from deepserve import models; from deepserve.store import Store;"
        "m = models.get(sys.argv[2], store=Store(sys.argv[1]));"
        "cloudpickle.load(open(m.path / 'saved_model.pkl', 'rb'))",
        str(store.root),
        saved.tag,
        check=False,
    )
    assert "No module named 'shoutmodel'" in failed.stderr


def test_stored_model_repr(store: Store) -> None:
    saved = picklable_model.save_model("doubler", Doubler(), store=store)
    assert repr(saved) == f'StoredModel(tag="{saved.tag}", path="{saved.path}")'
    assert isinstance(saved, StoredModel)


def test_an_artifact_that_cannot_be_copied_fails_the_save(
    store: Store, tmp_path: Path
) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidModel, match="artifacts: 'weights': cannot copy"):
        class_model.save_model("c", Lookup, artifacts={"weights": weights}, store=store)
    assert store.list() == []
    assert list((store.root / ".tmp").iterdir()) == []
