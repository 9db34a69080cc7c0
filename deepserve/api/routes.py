"""Request handlers of the DEEPaaS V2 compatible API."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from deepserve.api import args, media, pagination
from deepserve.api.errors import domain_error_response
from deepserve.api.openapi import ModelOps
from deepserve.exceptions import DeepserveError, ModelNotFound, NotSupported
from deepserve.executors import callspace
from deepserve.jobs import STATUSES, LogPage
from deepserve.model import UploadedFile
from deepserve.runtime import Registry, ServedModel, TrainingJob
from deepserve.settings import ApiSettings

#: DEEPaaS's date format for trainings.
DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=media.dumps(data), status=status, content_type=media.JSON)


class Handlers:
    """The handlers, bound to one registry and one set of settings."""

    def __init__(
        self,
        registry: Registry,
        ops: Mapping[str, ModelOps],
        settings: ApiSettings,
        *,
        docs_url: str | None,
        spec_url: str,
    ) -> None:
        self.registry = registry
        self.ops = ops
        self.settings = settings
        self.base = settings.base_path
        self.docs_url = docs_url
        self.spec_url = spec_url

    def _model(self, request: web.Request) -> tuple[ServedModel, ModelOps]:
        name = request.match_info["name"]
        if name not in self.ops:
            raise ModelNotFound(name)
        return self.registry[name], self.ops[name]

    def _version(self) -> dict[str, Any]:
        return {
            "version": "stable",
            "id": "v2",
            "links": [{"rel": "self", "type": media.JSON, "href": f"{self.base}/v2/"}],
        }

    async def versions(self, _request: web.Request) -> web.Response:
        links = []
        if self.docs_url:
            links.append({"rel": "help", "type": "text/html", "href": self.docs_url})
        links.append({"rel": "describedby", "type": media.JSON, "href": self.spec_url})
        return json_response({"versions": [self._version()], "links": links})

    async def version(self, _request: web.Request) -> web.Response:
        return json_response(self._version())

    def _meta(self, served: ServedModel) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": served.name,
            "name": served.name,
            "links": [{"rel": "self", "href": f"{self.base}/v2/models/{served.name}"}],
        }
        meta.update(served.model.metadata())
        return meta

    async def models(self, _request: web.Request) -> web.Response:
        return json_response(
            {"models": [self._meta(s) for s in self.registry.values()]}
        )

    async def model(self, request: web.Request) -> web.Response:
        served, _ops = self._model(request)
        return json_response(self._meta(served))

    async def _noting_unknown(
        self,
        request: web.Request,
        operation: str,
        handle: Callable[
            [web.Request, args.UnknownArgs], Awaitable[web.StreamResponse]
        ],
    ) -> web.StreamResponse:
        """Answer with ``handle``, naming the arguments the request carried
        that the model does not take in the response (errors included) and,
        unless they were refused, in the log."""
        unknown = args.UnknownArgs(reject=self.settings.unknown_arguments == "reject")
        try:
            try:
                response = await handle(request, unknown)
            except DeepserveError as error:
                if not unknown:
                    raise  # the error middleware answers, as for any request
                response = domain_error_response(error)
            unknown.mark(response)
            return response
        finally:
            if unknown and not unknown.reject:
                unknown.log(request.match_info["name"], operation)

    async def predict(self, request: web.Request) -> web.StreamResponse:
        return await self._noting_unknown(request, "predict", self._predict)

    async def start_training(self, request: web.Request) -> web.StreamResponse:
        return await self._noting_unknown(request, "train", self._start_training)

    async def _predict(
        self, request: web.Request, unknown: args.UnknownArgs
    ) -> web.StreamResponse:
        served, ops = self._model(request)
        if ops.predict is None:
            raise NotSupported(served.name, "predict")
        served.admit()
        uploads = args.Uploads(self.settings.upload_dir)
        result: Any = None
        try:
            kwargs, accept = await args.parse(
                request,
                ops.predict,
                uploads,
                self.settings.client_max_size,
                max_upload=self.settings.upload_max_size,
                unknown=unknown,
            )
            choice = ops.offer.negotiate(
                argument=accept, header=", ".join(request.headers.getall("Accept", []))
            )
            if ops.predict.accept is not None:
                kwargs[media.ACCEPT] = choice.offered
            result = await served.predict(kwargs)
            response = media.render(
                result,
                choice.media_type(result),
                model=served.name,
                schema=ops.response_schema,
            )
            if isinstance(response, media.FileBody):
                # Sent before the uploads go: it may be one of them. Its
                # headers leave before _noting_unknown sees the response.
                named = {args.HEADER: unknown.listing()} if unknown else None
                return await media.send_file(request, response, named)
            return response
        finally:
            uploads.cleanup()
            # A file the model returned from its call space: sent, or never
            # to be (an error); either way the space goes.
            callspace.release(result)

    async def _start_training(
        self, request: web.Request, unknown: args.UnknownArgs
    ) -> web.Response:
        served, ops = self._model(request)
        if ops.train is None:
            raise NotSupported(served.name, "train")
        uploads = args.Uploads(self.settings.upload_dir)
        try:
            kwargs, _ = await args.parse(
                request,
                ops.train,
                uploads,
                self.settings.client_max_size,
                max_upload=self.settings.upload_max_size,
                unknown=unknown,
            )
            job = await served.start_training(kwargs, _record(kwargs), uploads.cleanup)
        except BaseException:
            uploads.cleanup()
            raise
        # The job owns the uploads now and removes them when it ends.
        return json_response(training_view(job))

    async def trainings(self, request: web.Request) -> web.Response:
        served, _ops = self._model(request)
        status = pagination.choice(request.query, "status", STATUSES)
        win = pagination.window(request.query)
        page = await served.jobs(status=status, limit=win.limit, offset=win.offset)
        response = json_response([training_view(job) for job in page.jobs])
        response.headers.update(
            pagination.headers(request.rel_url, win, len(page.jobs), page.total)
        )
        return response

    async def training(self, request: web.Request) -> web.Response:
        served, _ops = self._model(request)
        job = await served.job(request.match_info["uuid"])
        return json_response(training_view(job))

    async def training_logs(self, request: web.Request) -> web.Response:
        served, _ops = self._model(request)
        since = pagination.integer(request.query, "since", minimum=0) or 0
        limit = pagination.integer(
            request.query, "limit", minimum=1, maximum=pagination.MAX_LIMIT
        )
        page = await served.logs(
            request.match_info["uuid"],
            since=since,
            limit=limit or pagination.MAX_LIMIT,
        )
        return json_response(logs_view(page))

    async def cancel_training(self, request: web.Request) -> web.Response:
        served, _ops = self._model(request)
        job = await served.cancel(request.match_info["uuid"])
        return json_response(training_view(job))


def _record(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments as shown to clients: uploads by name, never by temp path."""
    recorded: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, UploadedFile):
            recorded[key] = {
                "name": value.name,
                "original_filename": value.original_filename,
                "content_type": value.content_type,
            }
        else:
            recorded[key] = value
    return recorded


def _date(value: datetime.datetime) -> str:
    # DEEPaaS's dates are the server's local time, without a zone.
    return value.astimezone().strftime(DATE_FORMAT)


def training_view(job: TrainingJob) -> dict[str, Any]:
    """A training in DEEPaaS's JSON shape, plus ``duration``."""
    view: dict[str, Any] = {
        "uuid": job.id,
        "date": _date(job.created),
        "status": job.status,
        "args": job.args,
    }
    if job.finished is not None and job.duration is not None:
        view["duration"] = str(job.duration)
        view["finish_date"] = _date(job.finished)
    if job.status == "done" and job.finished is not None:
        view["result"] = {
            "output": job.result,
            "finish_date": _date(job.finished),
            "duration": str(job.duration),
        }
    elif job.status != "running" and job.message is not None:
        view["message"] = job.message
    return view


def logs_view(page: LogPage) -> dict[str, Any]:
    """A training's output after a cursor; ``next`` is the next cursor."""
    return {
        "uuid": page.job.id,
        "status": page.job.status,
        "next": page.next,
        "truncated": page.dropped > 0,
        "dropped": page.dropped,
        "logs": [
            {
                "seq": e.seq,
                "stream": e.stream,
                "time": datetime.datetime.fromtimestamp(
                    e.time, datetime.UTC
                ).isoformat(),
                "level": e.level,
                "text": e.text,
            }
            for e in page.entries
        ],
    }
