from __future__ import annotations

import datetime

import pytest

from deepserve.exceptions import BadTag
from deepserve.store.tag import Tag, check_name, new_version


@pytest.mark.parametrize(
    ("text", "name", "version"),
    [
        ("iris_clf", "iris_clf", None),
        ("iris_clf:latest", "iris_clf", None),
        ("iris-clf.v2:2uo5fkgxj27exuqj", "iris-clf.v2", "2uo5fkgxj27exuqj"),
        ("a:1", "a", "1"),
    ],
)
def test_valid_tags_parse(text: str, name: str, version: str | None) -> None:
    tag = Tag.parse(text)
    assert (tag.name, tag.version) == (name, version)
    assert tag.is_latest == (version is None)
    assert str(tag) == f"{name}:{version or 'latest'}"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the name is empty"),
        (":v1", "the name is empty"),
        ("iris:", "the version is empty"),
        ("Iris", "must be lowercase ('iris')"),
        ("iris:V1", "must be lowercase ('v1')"),
        ("a:b:c", "at most one ':'"),
        ("../etc", "may only hold"),
        ("iris clf", "may only hold"),
        ("-iris", "must start and end"),
        ("iris.", "must start and end"),
        ("a/b", "may only hold"),
        ("x" * 64, "longer than 63"),
        ("iris:" + "v" * 64, "longer than 63"),
    ],
)
def test_invalid_tags_are_rejected_not_altered(text: str, problem: str) -> None:
    with pytest.raises(BadTag) as caught:
        Tag.parse(text)
    assert problem in str(caught.value)
    assert f"'{text}'" in str(caught.value)


def test_a_name_holds_no_version() -> None:
    assert check_name("iris") == "iris"
    with pytest.raises(BadTag, match="cannot hold ':'"):
        check_name("iris:v1")


def test_versions_sort_by_creation_time_and_are_unique() -> None:
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    times = [
        start + datetime.timedelta(microseconds=n) for n in (0, 1, 2, 10**6, 10**12)
    ]
    versions = [new_version(t) for t in times]
    assert versions == sorted(versions)
    assert all(len(v) == 16 for v in versions)
    same_instant = {new_version(start) for _ in range(200)}
    assert len(same_instant) == 200
    for version in versions:
        Tag("m", version)  # every made version is a valid one
