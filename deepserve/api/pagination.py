"""Query parameters of paged lists, and the headers that describe a page."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

from yarl import URL

from deepserve.exceptions import BadInput

#: Most items one page may hold.
MAX_LIMIT = 1000


@dataclasses.dataclass(frozen=True)
class Window:
    """Which items a client asked for; ``limit`` ``None``: all of them."""

    limit: int | None
    offset: int


def integer(
    query: Mapping[str, str], name: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    """Query parameter ``name`` as an integer in range, or ``None`` if absent.

    :raises BadInput: naming the parameter, for anything else.
    """
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise _bad(name, f"Not a valid integer: '{raw}'.") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum else f">= {minimum}"
        raise _bad(name, f"Must be {bound}, got {value}.")
    return value


def choice(query: Mapping[str, str], name: str, allowed: Collection[str]) -> str | None:
    """Query parameter ``name``, one of ``allowed``, or ``None`` if absent.

    :raises BadInput: naming the parameter, for any other value.
    """
    raw = query.get(name)
    if raw is None:
        return None
    if raw not in allowed:
        raise _bad(name, f"Must be one of: {', '.join(allowed)}.")
    return raw


def window(query: Mapping[str, str]) -> Window:
    """``limit`` (1 to :data:`MAX_LIMIT`) and ``offset`` (from 0).

    :raises BadInput: naming the bad parameter.
    """
    limit = integer(query, "limit", minimum=1, maximum=MAX_LIMIT)
    offset = integer(query, "offset", minimum=0) or 0
    return Window(limit, offset)


def headers(url: URL, win: Window, count: int, total: int) -> dict[str, str]:
    """``X-Total-Count``, and a ``Link`` header (RFC 8288) to the first,
    previous, next and last pages when the client asked for a page."""
    out = {"X-Total-Count": str(total)}
    if win.limit is None:
        return out
    size = win.limit
    pages = {"first": 0}
    if win.offset > 0:
        pages["prev"] = max(0, win.offset - size)
    if win.offset + count < total:
        pages["next"] = win.offset + size
    pages["last"] = max(0, (total - 1) // size * size)
    links = [
        f'<{url.update_query(limit=size, offset=offset)}>; rel="{rel}"'
        for rel, offset in pages.items()
    ]
    out["Link"] = ", ".join(links)
    return out


def _bad(name: str, problem: str) -> BadInput:
    return BadInput(f"Invalid query parameter '{name}': {problem}", {name: [problem]})
