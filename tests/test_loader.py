import dataclasses

import pytest

from deepserve import adapters, loader
from deepserve.exceptions import LoaderError
from deepserve.loader import DEMO, ModelRef


@dataclasses.dataclass
class EP:
    name: str
    value: str
    group: str


def test_discover_both_groups_and_precedence():
    refs = loader.discover(
        [
            EP("old", "pkg.old", "deepaas.v2.model"),
            EP("both", "pkg.legacy", "deepaas.v2.model"),
            EP("both", "pkg.new:Model", "deepserve.v2.model"),
            EP("other", "pkg.x", "something.else"),
        ]
    )
    assert refs == {
        "old": ModelRef("old", "pkg.old", "deepaas.v2.model"),
        "both": ModelRef("both", "pkg.new:Model", "deepserve.v2.model"),
    }


def test_installed_fakes_are_discovered(fake_site):
    refs = loader.discover(loader.installed_entry_points())
    assert refs["oldstyle"] == ModelRef("oldstyle", "fake_oldstyle", "deepaas.v2.model")
    assert refs["classy"].target == "fake_classy:ClassModel"


def test_select_all_sorted_or_demo():
    a, b = ModelRef("a", "m.a", "g"), ModelRef("b", "m.b", "g")
    assert loader.select({"b": b, "a": a}, []) == [a, b]
    assert loader.select({}, []) == [DEMO]
    assert loader.select({"a": a}, ["demo"]) == [DEMO]
    assert loader.select({"a": a, "b": b}, ["b", "b"]) == [b]


def test_select_missing_model_names_it_and_the_available_ones():
    refs = {"a": ModelRef("a", "m.a", "g"), "b": ModelRef("b", "m.b", "g")}
    with pytest.raises(LoaderError) as err:
        loader.select(refs, ["a", "nope"])
    message = str(err.value)
    assert "'nope'" in message and "available models: a, b" in message


def test_import_failure_names_model_and_exception(fake_site):
    ref = ModelRef("broken", "fake_broken", "deepserve.v2.model")
    with pytest.raises(LoaderError) as err:
        loader.import_target(ref)
    assert "'broken'" in str(err.value)
    assert "ImportError: this package needs a library" in str(err.value)
    with pytest.raises(LoaderError, match="AttributeError"):
        loader.import_target(ModelRef("x", "fake_classy:Missing", "g"))


def test_class_target_is_instantiated_once(fake_site):
    model = adapters.build(ModelRef("classy", "fake_classy:ClassModel", "g"))
    assert model.metadata()["name"] == "classy"
    first = model.call("predict", {"x": 1.0, "label": "pos", "bad_output": False,
                                   "token": "t", "weights": []})  # fmt: skip
    again = model.call("predict", {"x": 1.0, "label": "pos", "bad_output": False,
                                   "token": "t", "weights": []})  # fmt: skip
    assert first["instance"] == again["instance"]


def test_base_model_placeholders_are_not_supported(tmp_path):
    from deepserve.adapters import DeepaasModel
    from deepserve.model import BaseModel

    class OnlyPredict(BaseModel):
        def predict(self, **kwargs):
            return 1

    model = DeepaasModel("only", OnlyPredict)
    assert model.supports("predict")
    assert not model.supports("train")
    assert model.metadata()["id"] == "only"
