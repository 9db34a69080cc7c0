"""Request handlers of the DEEPaaS V2 compatible API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from deepserve.api import args, media, pagination
from deepserve.api.errors import domain_error_response
from deepserve.exceptions import DeepserveError, ModelNotFound, NotSupported
from deepserve.executors import callspace
from deepserve.jobs import STATUSES
from deepserve.operations.encoding import FileBody, dumps
from deepserve.operations.negotiation import JSON, negotiate
from deepserve.operations.plan import ModelPlan
from deepserve.operations.uploads import Uploads
from deepserve.operations.views import (
    logs_view,
    metadata_view,
    record_args,
    training_view,
)
from deepserve.runtime import Registry, ServedModel
from deepserve.settings import ApiSettings


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type=JSON)


class Handlers:
    """The handlers, bound to one registry and one set of settings."""

    def __init__(
        self,
        registry: Registry,
        plans: Mapping[str, ModelPlan],
        settings: ApiSettings,
        *,
        docs_url: str | None,
        spec_url: str,
    ) -> None:
        self.registry = registry
        self.plans = plans
        self.settings = settings
        self.base = settings.base_path
        self.docs_url = docs_url
        self.spec_url = spec_url

    def _model(self, request: web.Request) -> tuple[ServedModel, ModelPlan]:
        """The model (the version) a path names, and its plan.

        :raises ModelNotFound: for a model or version not served.
        """
        info = request.match_info
        name = info["name"]
        if name not in self.registry:
            raise ModelNotFound(name)
        served = self.registry.version(name, info.get("version"))
        return served, self.plans[served.tag]

    def _version(self) -> dict[str, Any]:
        return {
            "version": "stable",
            "id": "v2",
            "links": [{"rel": "self", "type": JSON, "href": f"{self.base}/v2/"}],
        }

    async def versions(self, _request: web.Request) -> web.Response:
        links = []
        if self.docs_url:
            links.append({"rel": "help", "type": "text/html", "href": self.docs_url})
        links.append({"rel": "describedby", "type": JSON, "href": self.spec_url})
        return json_response({"versions": [self._version()], "links": links})

    async def version(self, _request: web.Request) -> web.Response:
        return json_response(self._version())

    def _meta(self, served: ServedModel, *, versioned: bool = False) -> dict[str, Any]:
        href = f"{self.base}/v2/models/{served.name}"
        if versioned and served.version:
            href += f"/versions/{served.version}"
        link = {"rel": "self", "href": href}
        return metadata_view(served.model, links=[link])

    def model_view(self, request: web.Request) -> dict[str, Any]:
        """The metadata of the model (the version) a path names."""
        served, _plan = self._model(request)
        return self._meta(served, versioned="version" in request.match_info)

    async def models(self, _request: web.Request) -> web.Response:
        return json_response(
            {"models": [self._meta(s) for s in self.registry.values()]}
        )

    async def model(self, request: web.Request) -> web.Response:
        return json_response(self.model_view(request))

    def version_view(self) -> dict[str, Any]:
        return self._version()

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
        served, plan = self._model(request)
        if plan.predict is None:
            raise NotSupported(served.name, "predict")
        served.admit()
        uploads = Uploads(self.settings.upload_dir)
        result: Any = None
        try:
            kwargs = await args.parse(
                request,
                plan.predict,
                uploads,
                self.settings.client_max_size,
                max_upload=self.settings.upload_max_size,
                unknown=unknown,
            )
            header = ", ".join(request.headers.getall("Accept", []))
            choice = negotiate(plan.offer, kwargs, header)
            result = await served.predict(kwargs)
            response = media.render(
                result,
                choice.media_type(result),
                model=served.name,
                schema=plan.response_schema,
            )
            if isinstance(response, FileBody):
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
        served, plan = self._model(request)
        if plan.train is None:
            raise NotSupported(served.name, "train")
        uploads = Uploads(self.settings.upload_dir)
        try:
            kwargs = await args.parse(
                request,
                plan.train,
                uploads,
                self.settings.client_max_size,
                max_upload=self.settings.upload_max_size,
                unknown=unknown,
            )
            job = await served.start_training(
                kwargs, record_args(kwargs), uploads.cleanup
            )
        except BaseException:
            uploads.cleanup()
            raise
        # The job owns the uploads now and removes them when it ends.
        return json_response(training_view(job))

    async def trainings(self, request: web.Request) -> web.Response:
        served, _plan = self._model(request)
        status = pagination.choice(request.query, "status", STATUSES)
        win = pagination.window(request.query)
        page = await served.jobs(status=status, limit=win.limit, offset=win.offset)
        response = json_response([training_view(job) for job in page.jobs])
        response.headers.update(
            pagination.headers(request.rel_url, win, len(page.jobs), page.total)
        )
        return response

    async def training(self, request: web.Request) -> web.Response:
        served, _plan = self._model(request)
        job = await served.job(request.match_info["uuid"])
        return json_response(training_view(job))

    async def training_logs(self, request: web.Request) -> web.Response:
        served, _plan = self._model(request)
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
        served, _plan = self._model(request)
        job = await served.cancel(request.match_info["uuid"])
        return json_response(training_view(job))
