"""``deepserve call``: run an installed model's methods without a server.

The model is imported into this process and called directly. Its arguments
become command-line options, read and checked by the HTTP API's own code
(:mod:`deepserve.api.args`), and its predictions are encoded by the API's
own :func:`deepserve.api.media.encode`, so a prediction made here is the one
the HTTP API would answer for the same input.
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
import sys
import traceback
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from deepserve import adapters, config, loader
from deepserve.api import media
from deepserve.api.args import ArgSpec, Uploads
from deepserve.api.media import ACCEPT
from deepserve.api.routes import training_view
from deepserve.exceptions import (
    BadInput,
    ConfigError,
    DeepserveError,
    LoaderError,
    ModelFailed,
    ModelHTTPError,
    NotSupported,
)
from deepserve.loader import ModelRef
from deepserve.model import Method, Model, UploadedFile
from deepserve.runtime import TrainingJob
from deepserve.settings import ServerSettings
from deepserve.shell import options, output
from deepserve.store import Store

LOG = logging.getLogger(__name__)

#: The methods, as DEEPaaS's ``deepaas-cli`` names them, and what they do.
METHODS = {
    "get_metadata": "print the model's metadata",
    "warm": "run the model's warm()",
    "predict": "run one prediction and output its result",
    "train": "run a training to its end and print its record",
}

DESCRIPTION = """\
Run an installed model's methods in this process, without a server. The
model's arguments are options of its method, read and checked as the HTTP
API reads them; file arguments are paths.
"""

USAGE = """\
%(prog)s [-h] [--model-name NAME] [--config-file PATH]
       [--config-dir DIR] [-d] [--warm | --no-warm] [-o FILE] METHOD [ARGS]"""

EPILOG = (
    "methods:\n"
    + "".join(f"  {m:<14}{h}\n" for m, h in METHODS.items())
    + (
        "\n'%(prog)s METHOD --help' lists the options of a method, the\n"
        "model's arguments included."
    )
)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Unknown file types are uploaded as what HTTP clients send them as.
OCTET_STREAM = "application/octet-stream"


class UsageError(Exception):
    """The command line cannot be carried out as written (exit status 2)."""


def main(argv: Sequence[str], *, prog: str = "deepserve call") -> int:
    """Run ``deepserve call``; returns the exit status.

    ``0``: done; ``1``: the model failed, or could not be found or loaded;
    ``2``: the command line is wrong (an unknown option, an invalid value).
    """
    parser = _call_parser(prog)
    ns = parser.parse_args(list(argv))
    if ns.method is None:
        parser.error(f"a METHOD is required: {', '.join(METHODS)}")
    try:
        settings, debug = config.load(_config_argv(ns), os.environ, prog=prog)
    except ConfigError as exc:
        return _fail(prog, str(exc))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format=LOG_FORMAT,
        stream=sys.stderr,
    )
    try:
        return _Call(prog, ns, settings).run()
    except UsageError as exc:
        return _fail(prog, str(exc), status=2)
    except (LoaderError, output.OutputError) as exc:
        return _fail(prog, str(exc))
    except DeepserveError as exc:
        if debug and isinstance(exc, ModelFailed) and exc.traceback:
            print(exc.traceback.rstrip(), file=sys.stderr)
        return _fail(prog, describe(exc))
    except KeyboardInterrupt:
        return _fail(prog, "interrupted", status=130)
    except BrokenPipeError:
        # The reader of our output went away (| head): nothing to report,
        # and nothing left to flush at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (--debug shows the traceback)"
        return _fail(prog, f"unexpected {type(exc).__name__}: {exc}{hint}")


def deepserve_cli() -> int:
    """The ``deepserve-cli`` command: ``deepserve call`` under DEEPaaS's name."""
    return main(sys.argv[1:], prog="deepserve-cli")


def describe(exc: DeepserveError) -> str:
    """One line for a model's failure; the user here is the operator."""
    if isinstance(exc, ModelFailed):
        return f"{exc.message}: {exc.detail}"
    if isinstance(exc, ModelHTTPError):
        # aiohttp's default text repeats the status: "400: Bad Request".
        text = exc.message.removeprefix(f"{exc.status}: ")
        return f"Model '{exc.model}' refused the call ({exc.status}): {text}"
    return str(exc)


def _call_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model-name",
        metavar="NAME",
        help="the model to run (default: the only one installed; also read "
        "from the configuration and DEEPSERVE_V2_MODEL or DEEPAAS_V2_MODEL)",
    )
    parser.add_argument(
        "--config-file",
        metavar="PATH",
        action="append",
        default=[],
        help="a configuration file, as for 'deepserve run'; may be repeated",
    )
    parser.add_argument(
        "--config-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="read every *.conf file in DIR",
    )
    parser.add_argument("-d", "--debug", action="store_true", help="log at DEBUG level")
    parser.add_argument(
        "--warm",
        action=argparse.BooleanOptionalAction,
        help="run warm() before predict and train, as the server does "
        "(default: on, or the configuration's 'warm')",
    )
    # deepserve run's spelling (oslo.config's) works too.
    parser.add_argument(
        "--nowarm", dest="warm", action="store_false", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the result to FILE ('-': standard output, binary "
        "results too) instead of the default place",
    )
    # DEEPaaS's deepaas-cli name for --output, so its scripts keep working.
    parser.add_argument(
        "--deepaas_method_output", dest="output", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "method",
        metavar="METHOD",
        # Optional for argparse, so that a missing one gets our message.
        nargs="?",
        choices=list(METHODS),
        help="get_metadata, warm, predict or train (see below)",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _config_argv(ns: argparse.Namespace) -> list[str]:
    """The options that ``deepserve run`` reads too, in its own syntax."""
    argv = []
    for path in ns.config_file:
        argv += ["--config-file", path]
    for path in ns.config_dir:
        argv += ["--config-dir", path]
    if ns.debug:
        argv.append("--debug")
    return argv


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
    if not requested and not available:
        LOG.warning("No model installed; running the bundled demo model")
        return loader.DEMO
    refs = loader.select(available, requested, store=store)
    if len(refs) > 1:
        raise UsageError(
            f"several models are installed ({', '.join(r.name for r in refs)}); "
            "choose one with --model-name"
        )
    return refs[0]


class _Call:
    """One run of ``deepserve call``."""

    def __init__(
        self, prog: str, ns: argparse.Namespace, settings: ServerSettings
    ) -> None:
        self.prog = prog
        self.ns = ns
        self.settings = settings

    def run(self) -> int:
        available = loader.discover(loader.installed_entry_points())
        # The command line names one model; the configuration may name several.
        requested = [self.ns.model_name] if self.ns.model_name else []
        ref = choose(
            available,
            requested or self.settings.model_names,
            store=Store(self.settings.store_root),
        )
        try:
            with _model_code():
                model = adapters.build(ref)
        except LoaderError as exc:
            raise LoaderError(
                f"{exc} (available models: {loader.describe(available)})"
            ) from exc
        method: str = self.ns.method
        # --warm/--no-warm wins over the configuration, [model:NAME] included.
        warm = self.ns.warm
        if warm is None:
            warm = self.settings.executor_for(ref.name).warm
        if method == "get_metadata":
            parser, _ = self._method_parser(model, method, None)
            ns = parser.parse_args(self.ns.args)
            meta = {"id": model.name, "name": model.name, **model.metadata()}
            where = getattr(ns, "output", None)
            self._emit(where, media.dumps(meta), media.JSON, f"{model.name}-metadata")
        elif method == "warm":
            parser, _ = self._method_parser(model, method, None)
            parser.parse_args(self.ns.args)
            self._warm(model, level=logging.INFO)
        elif method == "predict":
            self._predict(model, warm)
        else:
            self._train(model, warm)
        return 0

    def _method_parser(
        self, model: Model, method: str, spec: ArgSpec | None
    ) -> tuple[argparse.ArgumentParser, set[str]]:
        """The parser of a method's options, and the option strings it uses."""
        names = {arg.name for arg in spec.plan} if spec else set()
        parser = argparse.ArgumentParser(
            prog=f"{self.prog} {method}",
            description=f"{METHODS[method].capitalize()}: model '{model.name}'.",
            # A model argument called 'help' or 'output' keeps its name;
            # the short forms stay.
            add_help=False,
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

    def _offer(self, spec: ArgSpec | None) -> media.Offer:
        return media.Offer.from_accept_field(spec.accept if spec else None)

    def _parse(self, model: Model, method: Method) -> _Parsed:
        """Parse the method's options into the model's keyword arguments.

        Exits with status 2, naming the option, when a value is invalid.
        """
        if not model.supports(method):
            raise NotSupported(model.name, method)
        declared = model.predict_args() if method == "predict" else model.train_args()
        spec = ArgSpec.prepare(declared, negotiate_accept=method == "predict")
        parser, reserved = self._method_parser(model, method, spec)
        try:
            opts = options.add_options(
                parser, spec, reserved, title=f"arguments of {method}()"
            )
        except options.OptionError as exc:
            raise LoaderError(f"Model '{model.name}': {exc}") from None
        ns = parser.parse_args(self.ns.args)
        try:
            kwargs = options.load(spec, opts, ns)
            defaults, files = options.files(opts, ns)
            choice = (
                self._offer(spec).negotiate(argument=ns.accept, header=None)
                if method == "predict"
                else None
            )
        except options.OptionError as exc:
            parser.error(str(exc))
        except BadInput as exc:
            parser.error(f"argument --accept: {' '.join(exc.errors[ACCEPT])}")
        kwargs.update(defaults)
        if spec.accept is not None and choice is not None:
            kwargs[ACCEPT] = choice.offered
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
        with _model_code():
            model.call("warm", {})
        seconds = (datetime.datetime.now() - started).total_seconds()
        LOG.log(level, "Model '%s' warmed in %.3f s", model.name, seconds)

    def _predict(self, model: Model, warm: bool) -> None:
        parsed = self._parse(model, "predict")
        uploads = Uploads(self.settings.api.upload_dir)
        try:
            kwargs = {**parsed.kwargs, **self._uploads(parsed.files, uploads)}
            if warm:
                self._warm(model)
            with _model_code():
                result = model.call("predict", kwargs)
            assert parsed.accept is not None  # predict always negotiates
            media_type = parsed.accept.media_type(result)
            body = media.encode(
                result, media_type, model=model.name, schema=model.response_schema
            )
            # Written before the uploads go: the result may be one of them.
            self._emit(parsed.output, body, media_type, f"{model.name}-prediction")
        finally:
            uploads.cleanup()

    def _train(self, model: Model, warm: bool) -> None:
        parsed = self._parse(model, "train")
        uploads = Uploads(self.settings.api.upload_dir)
        try:
            kwargs = {**parsed.kwargs, **self._uploads(parsed.files, uploads)}
            if warm:
                self._warm(model)
            started = datetime.datetime.now(datetime.UTC)
            with _model_code():
                result = model.call("train", kwargs)
            finished = datetime.datetime.now(datetime.UTC)
            job = TrainingJob(
                id=uuid.uuid4().hex,
                model=model.name,
                status="done",
                args=_record(kwargs),
                created=started,
                started=started,
                finished=finished,
                duration=finished - started,
                result=result,
            )
        finally:
            uploads.cleanup()
        view = media.dumps(training_view(job))
        self._emit(parsed.output, view, media.JSON, f"{model.name}-training")

    def _emit(
        self,
        where: str | None,
        body: bytes | str | media.FileBody,
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
    accept: media.Choice | None


def _record(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments as a training record shows them: files by name, not path."""
    return {
        key: {
            "name": value.name,
            "original_filename": value.original_filename,
            "content_type": value.content_type,
        }
        if isinstance(value, UploadedFile)
        else value
        for key, value in kwargs.items()
    }


def _model_code() -> contextlib.AbstractContextManager[Any]:
    """Around the model's own code: what it prints goes to standard error.

    Standard output then holds the result alone, ready for a pipe.
    """
    return contextlib.redirect_stdout(sys.stderr)


def _fail(prog: str, message: str, *, status: int = 1) -> int:
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return status
