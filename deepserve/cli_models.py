"""``deepserve models``: list, inspect, delete, export and import stored models."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from deepserve import models
from deepserve.exceptions import DeepserveError
from deepserve.store import Store

FORMATS = ("table", "json", "yaml")


def main(argv: Sequence[str]) -> int:
    """Run ``deepserve models ...``; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.action is None:
        parser.print_help()
        return 2
    store = Store(args.store) if args.store else models.default_store()
    try:
        return int(args.run(store, args))
    except DeepserveError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepserve models",
        description="Manage the models in the model store.",
    )
    parser.set_defaults(action=None)
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="the model store's directory (default: $DEEPSERVE_HOME/models, "
        "or ~/deepserve/models)",
    )
    sub = parser.add_subparsers(title="actions", dest="action", metavar="ACTION")

    ls = sub.add_parser("list", help="list stored models, newest first")
    ls.add_argument("name", nargs="?", help="only the versions of this model")
    _output_option(ls)
    ls.set_defaults(run=_list)

    get = sub.add_parser("get", help="show one stored model's information")
    get.add_argument("tag", help="name, name:latest or name:version")
    _output_option(get, default="yaml")
    get.set_defaults(run=_get)

    delete = sub.add_parser("delete", help="delete stored models")
    delete.add_argument("tags", nargs="+", metavar="tag")
    delete.add_argument(
        "-y", "--yes", action="store_true", help="do not ask for confirmation"
    )
    delete.set_defaults(run=_delete)

    export = sub.add_parser("export", help="write a stored model to one archive")
    export.add_argument("tag")
    export.add_argument(
        "path",
        help="archive file, directory to write it in, or URL (s3://..., "
        "memory://...; needs deepserve[fsspec])",
    )
    _progress_option(export)
    export.set_defaults(run=_export)

    imp = sub.add_parser("import", help="add a model from an archive to the store")
    imp.add_argument("path", help="archive file or URL")
    _progress_option(imp)
    imp.set_defaults(run=_import)
    return parser


def _output_option(parser: argparse.ArgumentParser, default: str = "table") -> None:
    parser.add_argument(
        "-o", "--output", choices=FORMATS, default=default, help="output format"
    )


def _progress_option(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="draw a progress bar (default: when stderr is a terminal)",
    )
    group.add_argument("--no-progress", dest="progress", action="store_false")


def _list(store: Store, args: argparse.Namespace) -> int:
    entries = sorted(store.list(args.name), key=lambda m: m.info.created, reverse=True)
    rows = [_summary(m) for m in entries]
    if args.output == "table":
        print(_table(rows, ["tag", "module", "size", "created"]))
    else:
        _dump(rows, args.output)
    return 0


def _get(store: Store, args: argparse.Namespace) -> int:
    stored = store.get(args.tag)
    info = {"tag": stored.tag, "path": str(stored.path), **stored.info.to_json()}
    del info["format"]
    if args.output == "table":
        rows = [{"field": k, "value": _cell(v)} for k, v in info.items()]
        print(_table(rows, ["field", "value"], header=False))
    else:
        _dump(info, args.output)
    return 0


def _delete(store: Store, args: argparse.Namespace) -> int:
    entries = [store.get(tag) for tag in args.tags]  # every tag checked first
    tags = list(dict.fromkeys(str(m.tag) for m in entries))
    if not args.yes and not _confirm(
        f"Delete {len(tags)} model(s): {', '.join(tags)}? [y/N] "
    ):
        print("Nothing deleted.", file=sys.stderr)
        return 1
    for tag in tags:
        store.delete(tag)
        print(f"Deleted {tag}")
    return 0


def _export(store: Store, args: argparse.Namespace) -> int:
    stored = store.get(args.tag)
    with _Progress.when(args.progress, f"Exporting {stored.tag}") as bar:
        written = store.export_model(str(stored.tag), args.path, progress=bar)
    print(f"Exported {stored.tag} to {written}")
    return 0


def _import(store: Store, args: argparse.Namespace) -> int:
    with _Progress.when(args.progress, f"Importing {args.path}") as bar:
        stored = store.import_model(args.path, progress=bar)
    print(f"Imported {stored.tag}")
    return 0


def _confirm(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _summary(stored: Any) -> dict[str, Any]:
    info = stored.info
    return {
        "tag": str(stored.tag),
        "module": info.module,
        "size": _size(info.size),
        "created": _when(info.created),
        "labels": dict(info.labels or {}),
    }


def _dump(data: Any, fmt: str) -> None:
    """Print ``data`` (JSON-able: entries' ``to_json()`` and summaries)."""
    if fmt == "json":
        print(json.dumps(data, indent=2))
        return
    import yaml  # only -o yaml needs it

    print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")


def _table(
    rows: list[dict[str, Any]], columns: list[str], *, header: bool = True
) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    if header:
        cells.insert(0, [c.upper() for c in columns])
    if not cells:
        return "No models."
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in cells
    )


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _when(created: Any) -> str:
    if isinstance(created, datetime.datetime):
        return created.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return str(created)


class _Progress:
    """A one-line progress bar on stderr, fed ``(done, total)`` byte counts."""

    WIDTH = 30

    def __init__(self, label: str, stream: TextIO) -> None:
        self._label = label
        self._stream = stream
        self._last = 0.0
        self._drawn = False

    @classmethod
    def when(cls, wanted: bool | None, label: str) -> _Progress | _NoProgress:
        if wanted is None:
            wanted = sys.stderr.isatty()
        return cls(label, sys.stderr) if wanted else _NoProgress()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return  # at most ten redraws a second
        self._last = now
        share = done / total if total else 1.0
        filled = int(self.WIDTH * share)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self._stream.write(
            f"\r{self._label} [{bar}] {share:4.0%} {_size(done)} / {_size(total)}"
        )
        self._stream.flush()
        self._drawn = True

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()


class _NoProgress:
    def __call__(self, done: int, total: int) -> None:
        pass

    def __enter__(self) -> Callable[[int, int], None] | None:
        return None

    def __exit__(self, *exc: object) -> None:
        pass


def _fail(message: str) -> int:
    print(f"deepserve models: error: {' '.join(message.split())}", file=sys.stderr)
    return 1
