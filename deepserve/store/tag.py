"""Model tags: ``name``, ``name:latest`` and ``name:version``.

Names and versions become directory names in the store, so both are kept to
a small, portable alphabet: lowercase letters, digits, ``_``, ``-`` and ``.``,
starting and ending with a letter or digit, at most 63 characters. A tag that
breaks these rules is rejected with :class:`~deepserve.exceptions.BadTag`,
never lowercased or otherwise "fixed": a silently altered tag would name a
different model than the user meant.

Versions made by :func:`new_version` are 16 characters: 11 encode the
creation time in microseconds and 5 are random, in an alphabet whose ASCII
order is its numeric order, so sorting versions as strings sorts them by
creation time and two saves in the same microsecond still get distinct
versions.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import secrets

from deepserve.exceptions import BadTag

LATEST = "latest"

#: Crockford's base32 alphabet, lowercased: ascending in ASCII order, and
#: without the look-alike letters i, l, o and u.
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"

_PART = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?")
_TIME_CHARS = 11  # 55 bits of microseconds: good until the year 3111
_RANDOM_CHARS = 5
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _check_part(tag: str, what: str, part: str) -> None:
    if not part:
        raise BadTag(tag, f"the {what} is empty")
    if len(part) > 63:
        raise BadTag(tag, f"the {what} is longer than 63 characters")
    if part != part.lower() and _PART.fullmatch(part.lower()):
        raise BadTag(tag, f"the {what} must be lowercase ('{part.lower()}')")
    if not _PART.fullmatch(part):
        raise BadTag(
            tag,
            f"the {what} may only hold lowercase letters, digits, '_', '-' "
            "and '.', and must start and end with a letter or a digit",
        )


@dataclasses.dataclass(frozen=True)
class Tag:
    """A parsed model tag.

    :param name: the model's name.
    :param version: a version, or ``None`` for the latest one.
    """

    name: str
    version: str | None = None

    def __post_init__(self) -> None:
        _check_part(str(self), "name", self.name)
        if self.version is not None:
            if self.version == LATEST:
                raise BadTag(str(self), "use version None for the latest version")
            _check_part(str(self), "version", self.version)

    @classmethod
    def parse(cls, text: str) -> Tag:
        """Parse ``name``, ``name:latest`` or ``name:version``.

        :raises BadTag: naming the problem, when ``text`` is not a valid tag.
        """
        if not isinstance(text, str):
            raise BadTag(repr(text), "a tag must be a string")
        name, sep, version = text.partition(":")
        if ":" in version:
            raise BadTag(text, "a tag holds at most one ':'")
        _check_part(text, "name", name)
        if not sep:
            return cls(name)
        if version == LATEST:
            return cls(name)
        _check_part(text, "version", version)
        return cls(name, version)

    @property
    def is_latest(self) -> bool:
        """Whether this tag means "the newest version of ``name``"."""
        return self.version is None

    def __str__(self) -> str:
        return f"{self.name}:{self.version or LATEST}"


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name.

    :raises BadTag: when it is not (a version or ``:`` in it included).
    """
    if not isinstance(name, str):
        raise BadTag(repr(name), "a model name must be a string")
    if ":" in name:
        raise BadTag(name, "a model name cannot hold ':' (give the name only)")
    _check_part(name, "name", name)
    return name


def _encode(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 32)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def new_version(created: datetime.datetime) -> str:
    """A fresh version string for a model created at ``created`` (aware).

    Versions sort as strings in the order of their creation times.
    """
    micros = (created - _EPOCH) // datetime.timedelta(microseconds=1)
    return _encode(micros, _TIME_CHARS) + "".join(
        secrets.choice(ALPHABET) for _ in range(_RANDOM_CHARS)
    )
