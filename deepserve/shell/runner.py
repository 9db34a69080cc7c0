"""``deepserve call``'s work: load the model, read its method's options, run it.

The model is imported into this process and called directly. Its arguments
become command-line options, read and checked with the
:class:`~deepserve.operations.arguments.ArgSpec` every protocol uses; the
result's media type is negotiated and its body encoded by the same code as
the HTTP API's (:mod:`deepserve.operations.negotiation`,
:func:`deepserve.operations.encoding.encode`), so a prediction made here is
the one the HTTP API would answer for the same input.

:mod:`deepserve.shell.command` imports this module once the command line
is known to name a method: ``deepserve call --help`` and the command line's
own mistakes do not pay for these imports.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import logging
import mimetypes
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from deepserve import adapters, loader
from deepserve.exceptions import BadInput, LoaderError, ModelFailed, NotSupported
from deepserve.loader import ModelRef
from deepserve.model import Method, Model, UploadedFile
from deepserve.operations.arguments import ArgSpec
from deepserve.operations.encoding import FileBody, dumps, encode
from deepserve.operations.negotiation import ACCEPT, JSON, Choice, Offer, negotiate
from deepserve.operations.uploads import Uploads
from deepserve.operations.views import metadata_view, record_args, training_view
from deepserve.runtime import TrainingJob
from deepserve.settings import ServerSettings
from deepserve.shell import options, output, streams
from deepserve.shell.command import METHODS, Parser, UsageError
from deepserve.store import Store

LOG = logging.getLogger("deepserve.shell")

#: Unknown file types are uploaded as what HTTP clients send them as.
OCTET_STREAM = "application/octet-stream"


@dataclasses.dataclass(frozen=True)
class Invocation:
    """The command line, read as far as the method's name."""

    #: The program as typed: ``deepserve call`` or ``deepserve-cli``.
    prog: str
    #: ``deepserve call``'s own options.
    ns: argparse.Namespace
    #: The command line up to the method's name included, for messages
    #: (``deepserve call --model-name x predict``).
    typed: str
    #: ``deepserve call``'s option strings, named when given after the method.
    call_options: frozenset[str]


def run(call: Invocation, settings: ServerSettings) -> int:
    """Run the method; returns 0 or raises.

    :raises UsageError: when the command line cannot be carried out.
    :raises DeepserveError: when the model cannot be found, loaded or run.
    :raises SystemExit: after a method's ``--help``.
    """
    return _Call(call, settings).run()


def choose(
    available: Mapping[str, ModelRef],
    requested: Sequence[str],
    *,
    store: Store | None = None,
) -> ModelRef:
    """The one model to run: an installed one, or one from ``store``.

    :raises LoaderError: when the requested model is not installed.
    :raises UsageError: when no single model is named and several are found.
    """
    if len(requested) > 1:
        raise UsageError(
            f"several models are named ({', '.join(requested)}); "
            "choose one with --model-name"
        )
    refs = loader.select(available, requested, store=store)
    if len(refs) > 1:
        raise UsageError(
            f"several models are installed ({', '.join(r.name for r in refs)}); "
            "choose one with --model-name"
        )
    return refs[0]


def asks_for_help(args: Sequence[str]) -> bool:
    """Whether a method's options may ask for ``--help`` (or ``-h``).

    Said before the model is loaded, so an abbreviation counts as well; a
    model argument called ``help`` may make it a false alarm, which only
    delays what the model writes on import.
    """
    for arg in args:
        if arg == "--":
            break
        flag = arg.partition("=")[0]
        if flag == "-h" or (len(flag) > 2 and "--help".startswith(flag)):
            return True
    return False


@contextlib.contextmanager
def model_code(name: str) -> Iterator[None]:
    """Around the model's own code: what it writes goes to standard error,
    as it comes, and standard output holds the result alone.

    :raises ModelFailed: when the model calls ``sys.exit()`` (a training
        script's own argument parser, say): its failure, not the command's
        exit status.
    """
    with streams.model_output_to_stderr():
        try:
            yield
        except SystemExit as exc:
            raise ModelFailed(name, "SystemExit", f"sys.exit({exc.code!r})") from None


@dataclasses.dataclass
class _Method:
    """A method's options, ready to read."""

    parser: Parser
    spec: ArgSpec | None = None
    options: list[options.Option] = dataclasses.field(default_factory=list)


class _Call:
    """One run of ``deepserve call``."""

    def __init__(self, call: Invocation, settings: ServerSettings) -> None:
        self.call = call
        self.ns = call.ns
        self.settings = settings

    def run(self) -> int:
        method: str = self.ns.method
        quiet = asks_for_help(self.ns.args)
        # With --help, what the model writes on import is held back, so
        # that the help is all there is; it is passed on otherwise.
        holding = streams.held_back() if quiet else contextlib.nullcontext(None)
        with holding as held:
            model = self._load()
            prepared = self._prepare(model, method)
        try:
            ns = prepared.parser.parse_all(
                self.ns.args, elsewhere=self._elsewhere(method)
            )
        except SystemExit:  # the help, printed
            if held is not None:
                held.discard()
            raise
        finally:
            if held is not None:
                held.release()
        # --warm/--no-warm wins over the configuration, [model:NAME] included.
        warm = self.ns.warm
        if warm is None:
            warm = self.settings.executor_for(model.name).warm
        if method == "get_metadata":
            with model_code(model.name):
                # Written as JSON, a value's str() or tolist() is model code.
                text = dumps(metadata_view(model))
            where = getattr(ns, "output", None)
            self._emit(where, text, JSON, f"{model.name}-metadata")
        elif method == "warm":
            self._warm(model, level=logging.INFO)
        elif method == "predict":
            self._predict(model, prepared, ns, warm)
        else:
            self._train(model, prepared, ns, warm)
        return 0

    def _load(self) -> Model:
        available = loader.discover(loader.installed_entry_points())
        # The command line names one model; the configuration may name several.
        requested = [self.ns.model_name] if self.ns.model_name else []
        ref = choose(
            available,
            requested or self.settings.model_names,
            store=Store(self.settings.store_root),
        )
        with model_code(ref.name):
            return adapters.build(ref)

    def _elsewhere(self, method: str) -> dict[str, str]:
        """Hints for ``deepserve call``'s own options given after the method."""
        return {
            flag: f"'{flag}' is an option of '{self.call.prog}': "
            f"give it before '{method}'"
            for flag in self.call.call_options
        }

    def _prepare(self, model: Model, method: str) -> _Method:
        """The parser of the method's options, the model's arguments included.

        :raises NotSupported: when the model has no such method.
        :raises LoaderError: when an argument cannot be an option.
        """
        if method not in ("predict", "train"):
            return _Method(self._method_parser(model, method, None)[0])
        run: Method = "predict" if method == "predict" else "train"
        if not model.supports(run):
            raise NotSupported(model.name, run)
        with model_code(model.name):
            declared = model.predict_args() if run == "predict" else model.train_args()
        spec = ArgSpec.prepare(declared, negotiate_accept=run == "predict")
        parser, reserved = self._method_parser(model, method, spec)
        try:
            opts = options.add_options(
                parser, spec, reserved, title=f"arguments of {method}()"
            )
        except options.OptionError as exc:
            raise LoaderError(f"Model '{model.name}': {exc}") from None
        return _Method(parser, spec, opts)

    def _method_parser(
        self, model: Model, method: str, spec: ArgSpec | None
    ) -> tuple[Parser, set[str]]:
        """The parser of a method's options, and the option strings it uses."""
        names = {arg.name for arg in spec.plan} if spec else set()
        parser = Parser(
            prog=f"{self.call.prog} {method}",
            description=f"{METHODS[method].capitalize()}: model '{model.name}'.",
            # A model argument called 'help' or 'output' keeps its name;
            # the short forms stay.
            add_help=False,
            typed=self.call.typed,
        )
        help_flags = ["-h"] if "help" in names else ["-h", "--help"]
        parser.add_argument(
            *help_flags, action="help", help="show this help message and exit"
        )
        out_flags = ["-o"] if "output" in names else ["-o", "--output"]
        parser.add_argument(
            *out_flags,
            dest="output",
            metavar="FILE",
            default=argparse.SUPPRESS,
            help="write the result to FILE ('-': standard output, binary results too)",
        )
        reserved = {*help_flags, *out_flags}
        if method == "predict":
            offer = self._offer(spec)
            reserved.add("--accept")
            parser.add_argument(
                "--accept",
                metavar="TYPE",
                help="media type of the result, as the 'accept' argument: "
                f"one of {', '.join(offer.types)} (default: {offer.default})",
            )
        return parser, reserved

    def _offer(self, spec: ArgSpec | None) -> Offer:
        return Offer.from_accept_field(spec.accept if spec else None)

    def _read(self, method: str, prepared: _Method, ns: argparse.Namespace) -> _Parsed:
        """The model's keyword arguments, from the method's options.

        :raises UsageError: naming the option, when a value is invalid.
        """
        spec, parser = prepared.spec, prepared.parser
        assert spec is not None  # predict and train have one
        choice = None
        try:
            kwargs = options.load(spec, prepared.options, ns)
            defaults, files = options.files(prepared.options, ns)
            kwargs.update(defaults)
            if method == "predict":
                # --accept is the model's accept argument (its only source).
                kwargs[ACCEPT] = ns.accept
                choice = negotiate(self._offer(spec), kwargs, header=None)
        except options.OptionError as exc:
            parser.error(str(exc))
        except BadInput as exc:
            parser.error(f"argument --accept: {' '.join(exc.errors[ACCEPT])}")
        return _Parsed(kwargs, files, getattr(ns, "output", None), choice)

    def _uploads(
        self, files: list[tuple[options.Option, str]], uploads: Uploads
    ) -> dict[str, UploadedFile]:
        """Copies of the files given, handed over as the HTTP API does."""
        given: dict[str, UploadedFile] = {}
        for opt, path in files:
            copy = uploads.new_path()
            shutil.copyfile(path, copy)
            guessed, _ = mimetypes.guess_type(path)
            given[opt.arg.name] = UploadedFile(
                name=opt.arg.key,
                filename=copy,
                content_type=guessed or OCTET_STREAM,
                original_filename=os.path.basename(path),
            )
        return given

    def _warm(self, model: Model, *, level: int = logging.DEBUG) -> None:
        started = datetime.datetime.now()
        with model_code(model.name):
            model.call("warm", {})
        seconds = (datetime.datetime.now() - started).total_seconds()
        LOG.log(level, "Model '%s' warmed in %.3f s", model.name, seconds)

    def _predict(
        self, model: Model, prepared: _Method, ns: argparse.Namespace, warm: bool
    ) -> None:
        parsed = self._read("predict", prepared, ns)
        uploads = Uploads(self.settings.api.upload_dir)
        try:
            kwargs = {**parsed.kwargs, **self._uploads(parsed.files, uploads)}
            if warm:
                self._warm(model)
            assert parsed.accept is not None  # predict always negotiates
            with model_code(model.name):
                result = model.call("predict", kwargs)
                # Encoding runs model code too: the str() or tolist() of
                # what it returned, the fields of its response schema.
                media_type = parsed.accept.media_type(result)
                body = encode(
                    result, media_type, model=model.name, schema=model.response_schema
                )
            # Written before the uploads go: the result may be one of them.
            self._emit(parsed.output, body, media_type, f"{model.name}-prediction")
        finally:
            uploads.cleanup()

    def _train(
        self, model: Model, prepared: _Method, ns: argparse.Namespace, warm: bool
    ) -> None:
        parsed = self._read("train", prepared, ns)
        uploads = Uploads(self.settings.api.upload_dir)
        try:
            kwargs = {**parsed.kwargs, **self._uploads(parsed.files, uploads)}
            if warm:
                self._warm(model)
            started = datetime.datetime.now(datetime.UTC)
            # The training's output reaches the terminal as it is written.
            with model_code(model.name):
                result = model.call("train", kwargs)
            finished = datetime.datetime.now(datetime.UTC)
            job = TrainingJob(
                id=uuid.uuid4().hex,
                model=model.name,
                status="done",
                args=record_args(kwargs),
                created=started,
                started=started,
                finished=finished,
                duration=finished - started,
                result=result,
            )
        finally:
            uploads.cleanup()
        with model_code(model.name):  # the result's str() or tolist()
            view = dumps(training_view(job))
        self._emit(parsed.output, view, JSON, f"{model.name}-training")

    def _emit(
        self,
        where: str | None,
        body: bytes | str | FileBody,
        media_type: str,
        stem: str,
    ) -> None:
        # -o after the method name wins over -o before it.
        output.emit(body, media_type, output=where or self.ns.output, stem=stem)


@dataclasses.dataclass(frozen=True)
class _Parsed:
    """A method's command line, read."""

    #: The model's keyword arguments, files not included yet.
    kwargs: dict[str, Any]
    #: File options given, with their paths.
    files: list[tuple[options.Option, str]]
    #: ``--output`` given after the method name.
    output: str | None
    #: The negotiated media type (predict only).
    accept: Choice | None
