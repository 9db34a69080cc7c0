"""Which media type a prediction answers with: the ``accept`` rules.

A model offers the types its ``accept`` argument lists (:class:`Offer`);
a client asks with that argument or with an ``Accept`` header.
:func:`negotiate` is the one place a protocol layer hands both over: it
chooses (:meth:`Offer.choose`, where the rules live) and gives the model's
``accept`` argument the chosen type.
"""

from __future__ import annotations

import dataclasses
import mimetypes
import pathlib
import re
from collections.abc import MutableMapping
from typing import Any

import marshmallow
from marshmallow import fields, validate

from deepserve.exceptions import BadInput
from deepserve.model import ReturnedFile, UploadedFile, is_file_tuple

JSON = "application/json"
#: The argument through which a model declares its response media types.
ACCEPT = "accept"


@dataclasses.dataclass(frozen=True)
class Offer:
    """The media types a model's ``predict`` can answer with.

    :param types: in the model's order of preference.
    :param default: what ``*/*`` (or no preference) gets.
    :param takes_argument: whether the model takes an ``accept`` argument,
        which then receives the chosen type (:func:`negotiate` hands it over).
    """

    types: tuple[str, ...]
    default: str
    takes_argument: bool = False

    @classmethod
    def from_accept_field(cls, field: fields.Field | None) -> Offer:
        """What a model's ``accept`` field offers (its ``OneOf`` choices or
        ``enum``, and its default); JSON alone when it has none."""
        if field is None:
            return cls((JSON,), JSON)
        choices: list[str] = []
        validators = field.validators if hasattr(field, "validators") else []
        for v in validators:
            if isinstance(v, validate.OneOf):
                choices.extend(str(c) for c in v.choices if str(c) != "*/*")
        enum = field.metadata.get("enum")
        if not choices and isinstance(enum, list | tuple):
            choices.extend(str(c) for c in enum if str(c) != "*/*")
        default = field.load_default
        if default is marshmallow.missing or callable(default):
            default = None
        if not choices:
            choices = [str(default) if default else JSON]
        chosen = str(default) if default in choices else choices[0]
        return cls(tuple(dict.fromkeys(choices)), chosen, takes_argument=True)

    def choose(self, *, argument: str | None, header: str | None) -> Choice:
        """The type to answer with, for an ``accept`` argument or an
        ``Accept`` header (the argument wins when both are given).

        Wildcards match both ways (``image/png`` satisfies an ``image/*``
        offer, ``image/*`` an ``image/png`` one), and ``*/*`` asks for the
        default. An argument must name an offered type; a header is only a
        preference: when nothing offered satisfies it, the default is chosen
        (RFC 9110 allows this, and DEEPaaS clients rely on it).

        :raises BadInput: naming ``accept``, for an argument outside the
            offered types.
        """
        if argument is not None and argument.strip():
            wanted = _bare(argument)
            choice = None
            if wanted == "*/*":
                choice = Choice(self.default)
            elif _MEDIA_RANGE.fullmatch(wanted):
                choice = self._match(wanted, ())
            if choice is None:
                raise BadInput(
                    f"Invalid arguments: {ACCEPT}",
                    errors={ACCEPT: [f"Must be one of: {', '.join(self.types)}."]},
                )
            return choice
        ranges = _parse_accept(header or "")
        # Types the client refused (q=0) are not chosen for a broader range.
        refused = tuple(r for r, q in ranges if q == 0)
        for media_range, q in ranges:
            if q == 0:
                continue
            if media_range == "*/*" and not any(
                covers(r, self.default) for r in refused
            ):
                return Choice(self.default)
            choice = self._match(media_range, refused)
            if choice is not None:
                return choice
        return Choice(self.default)

    def _match(self, wanted: str, refused: tuple[str, ...]) -> Choice | None:
        """The offered type ``wanted`` names: the same type first, then one
        that a wildcard on either side covers, none that ``refused`` (the
        ranges a header gave q=0) covers."""
        for offered in self.types:
            if _bare(offered) == wanted:
                return Choice(offered)
        for offered in self.types:
            if any(covers(r, offered) for r in refused):
                continue
            if covers(offered, wanted):
                concrete = None if "*" in wanted else wanted
                return Choice(offered, concrete)
            if covers(wanted, offered):
                return Choice(offered)
        return None


@dataclasses.dataclass(frozen=True)
class Choice:
    """The outcome of a negotiation.

    :param offered: one of the model's own types, as the model wrote it:
        what its ``accept`` argument receives.
    :param requested: the concrete type the client named, when ``offered``
        is a range (``image/*``) that covers it (``image/png``).
    """

    offered: str
    requested: str | None = None

    def media_type(self, result: Any) -> str:
        """The Content-Type of the answer: the offered type, or, when that
        is a range, the first concrete type in the range that the result
        carries (a returned file's ``content_type``), that the returned
        file's name tells, that its first bytes tell (:func:`sniff`), or
        that the client asked for; the range itself when none does."""
        if "*" not in self.offered:
            return self.offered
        path = result_path(result)
        for candidate in (
            getattr(result, "content_type", None),
            mimetypes.guess_type(path)[0] if path else None,
            sniff(_head(result, path)),
            self.requested,
        ):
            if isinstance(candidate, str) and candidate:
                bare = _bare(candidate)
                if "*" not in bare and covers(self.offered, bare):
                    return candidate
        return self.offered


def negotiate(
    offer: Offer, kwargs: MutableMapping[str, Any], header: str | None
) -> Choice:
    """Choose the answer's type for a call's arguments and ``Accept`` header.

    ``kwargs`` are the model's arguments as read, the ``accept`` argument
    among them when the client gave one (a ``None`` value is no
    preference). When the model takes an ``accept`` argument
    (``offer.takes_argument``), it is set to the chosen type; otherwise it
    is removed. The argument wins over the header (:meth:`Offer.choose`).

    :raises BadInput: naming ``accept``, for an argument outside the
        offered types.
    """
    argument = kwargs.pop(ACCEPT, None)
    choice = offer.choose(
        argument=None if argument is None else str(argument), header=header
    )
    if offer.takes_argument:
        kwargs[ACCEPT] = choice.offered
    return choice


#: Leading bytes of common binary formats, and their media types.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (8, b"WEBP", "image/webp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"\x1f\x8b", "application/gzip"),
    (8, b"WAVE", "audio/wav"),
    (0, b"fLaC", "audio/flac"),
    (0, b"OggS", "audio/ogg"),
    (0, b"ID3", "audio/mpeg"),
)
#: ISO base media files (``ftyp`` at byte 4): the major brand says which.
_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"qt  ": "video/quicktime",
    b"3gp4": "video/3gpp",
    b"3gp5": "video/3gpp",
    b"isom": "video/mp4",
    b"iso2": "video/mp4",
    b"mp41": "video/mp4",
    b"mp42": "video/mp4",
    b"M4V ": "video/mp4",
    b"avc1": "video/mp4",
    b"dash": "video/mp4",
}


def sniff(head: bytes) -> str | None:
    """The media type the first bytes of a body show, for a few common
    binary formats; ``None`` when they show none of them."""
    for offset, magic, media_type in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            if offset == 8 and head[:4] != b"RIFF":
                continue
            return media_type
    if head[4:8] == b"ftyp":
        return _BRANDS.get(head[8:12])
    # BMP: "BM", the file size, then four reserved bytes that are zero.
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    return None


def _head(result: Any, path: str | None, size: int = 16) -> bytes:
    """The first bytes of a result: bytes, or a returned file's."""
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result[:size])
    if path:
        try:
            with open(path, "rb") as f:
                return f.read(size)
        except OSError:
            return b""
    return b""


def covers(media_range: str, media_type: str) -> bool:
    """Whether ``media_range`` (``*/*``, ``image/*`` or a type) covers
    ``media_type``; case-insensitive, parameters ignored."""
    r_major, _, r_minor = _bare(media_range).partition("/")
    t_major, _, t_minor = _bare(media_type).partition("/")
    if r_major == "*":
        return r_minor == "*"
    return r_major == t_major and r_minor in ("*", t_minor)


#: A media type or range, without parameters (RFC 9110's tokens).
_MEDIA_RANGE = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+/[!#$%&'*+.^_`|~0-9a-z-]+")


def _bare(media_type: str) -> str:
    """A media type without its parameters, in lower case."""
    return media_type.split(";", 1)[0].strip().lower()


def _parse_accept(header: str) -> list[tuple[str, float]]:
    """Well-formed media ranges with their q, best first (stable for equal
    q); malformed items are skipped."""
    ranges: list[tuple[str, float]] = []
    for item in header.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        media = media.lower()
        if not _MEDIA_RANGE.fullmatch(media) or (
            media.startswith("*/") and (media != "*/*")
        ):
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((media, max(q, 0.0)))
    ranges.sort(key=lambda r: -r[1])
    return ranges


def is_json(media_type: str) -> bool:
    bare = _bare(media_type)
    return bare == JSON or bare.endswith("+json")


def result_path(result: Any) -> str | None:
    """The file a result is (a returned or uploaded file, a path), if it is one."""
    if isinstance(result, ReturnedFile | UploadedFile) or is_file_tuple(result):
        return result.filename or ""
    if isinstance(result, pathlib.PurePath):
        return str(result)
    # A str is content, never a path: a prediction that happens to name a
    # file on the server must not send that file.
    return None
