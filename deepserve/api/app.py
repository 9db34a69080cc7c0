"""The application factory, and the list of endpoints it serves."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from aiohttp import web

from deepserve.api import (
    access,
    auth,
    cors,
    docs,
    endpoints,
    health,
    metrics,
    oip_docs,
    openapi,
    requestids,
)
from deepserve.api.debug import DebugLog
from deepserve.api.endpoints import Access, Doc, Endpoint
from deepserve.api.errors import Handler, error_middleware
from deepserve.api.inflight import IN_FLIGHT, InFlight
from deepserve.api.oip import SERVICE, OipHandlers, SharedPaths
from deepserve.api.routes import Handlers
from deepserve.oip.service import InferenceService
from deepserve.operations import plan
from deepserve.operations.encoding import dumps
from deepserve.operations.negotiation import JSON
from deepserve.runtime import Registry
from deepserve.settings import ApiSettings

#: The OpenAPI document an app serves, as text.
SPEC_TEXT = web.AppKey("openapi_text", str)


@dataclasses.dataclass(frozen=True)
class Answers:
    """What answers the endpoints of one app."""

    api: Handlers
    #: The Open Inference Protocol's handlers, and the paths it shares
    #: with the DEEPaaS API.
    oip: OipHandlers
    shared: SharedPaths
    health: health.Health
    swagger: Handler
    ui: docs.SwaggerUI
    debug: DebugLog
    #: ``None`` when the metrics endpoint is off.
    metrics: Handler | None


async def _swagger(request: web.Request) -> web.Response:
    return web.Response(text=request.app[SPEC_TEXT], content_type=JSON)


async def _not_served(_request: web.Request) -> web.Response:
    """The handler of a list written only to be documented."""
    raise web.HTTPNotFound()


def declare(settings: ApiSettings, answers: Answers | None = None) -> list[Endpoint]:
    """Every endpoint of an app with ``settings``, in the order the OpenAPI
    document lists them: the one list routing, the document and
    authentication follow.

    :param answers: the handlers; without them, the endpoints answer 404
        (a list to document, not to serve).
    """

    def on(pick: Callable[[Answers], Handler | None]) -> Handler:
        handler = pick(answers) if answers is not None else None
        return handler or _not_served

    model = "/v2/models/{name}"
    version = f"{model}/versions/{{version}}"
    uuid = (openapi.UUID_PARAM,)
    listed = [
        Endpoint(
            "GET",
            "/",
            on(lambda a: a.api.versions),
            Access.PUBLIC,
            Doc("/", openapi.versions_op),
        ),
        Endpoint(
            "GET",
            "/swagger.json",
            on(lambda a: a.swagger),
            Access.PUBLIC,
            slash=False,
        ),
        # Both protocols' server metadata, in one document.
        Endpoint(
            "GET",
            "/v2",
            on(lambda a: a.shared.version),
            Access.PUBLIC,
            Doc("/v2/", openapi.version_op),
        ),
        Endpoint(
            "GET",
            "/v2/models",
            on(lambda a: a.api.models),
            Access.PUBLIC,
            Doc("/v2/models/", openapi.models_op),
        ),
        # Probes must reach health and readiness without credentials.
        Endpoint(
            "GET",
            "/v2/health/live",
            on(lambda a: a.health.live),
            Access.PUBLIC,
            Doc("/v2/health/live", openapi.live_op, group="health"),
        ),
        Endpoint(
            "GET",
            "/v2/health/ready",
            on(lambda a: a.health.ready),
            Access.PUBLIC,
            Doc("/v2/health/ready", openapi.ready_op, group="health"),
        ),
        Endpoint(
            "GET",
            f"{model}/ready",
            on(lambda a: a.health.model_ready),
            Access.PUBLIC,
            Doc(f"{model}/ready", openapi.model_ready_op, group="health"),
        ),
        Endpoint(
            "GET",
            f"{version}/ready",
            on(lambda a: a.health.model_ready),
            Access.PUBLIC,
            Doc(f"{version}/ready", openapi.version_ready_op, group="health"),
        ),
    ]
    if settings.debug_endpoint:
        listed.append(
            Endpoint(
                "GET",
                "/v2/debug",
                on(lambda a: a.debug.handler),
                Access.PROTECTED,
                Doc("/v2/debug/", openapi.debug_op),
            )
        )
    # Both protocols' model metadata, in one document.
    listed += [
        Endpoint(
            "GET",
            model,
            on(lambda a: a.shared.model),
            Access.PUBLIC,
            Doc(f"{model}/", openapi.metadata_op, group="model"),
        ),
        Endpoint(
            "GET",
            version,
            on(lambda a: a.shared.model),
            Access.PUBLIC,
            Doc(version, openapi.version_metadata_op, group="model"),
        ),
    ]
    if settings.predict_endpoint:
        listed += [
            Endpoint(
                "POST",
                f"{model}/predict",
                on(lambda a: a.api.predict),
                Access.PREDICT,
                Doc(f"{model}/predict/", openapi.predict_op, group="model"),
            ),
            Endpoint(
                "POST",
                f"{version}/predict",
                on(lambda a: a.api.predict),
                Access.PREDICT,
                Doc(f"{version}/predict/", openapi.version_predict_op, group="model"),
            ),
            Endpoint(
                "POST",
                f"{model}/infer",
                on(lambda a: a.oip.infer),
                Access.PREDICT,
                Doc(f"{model}/infer", oip_docs.infer_op, group="model"),
                oip=True,
            ),
            Endpoint(
                "POST",
                f"{version}/infer",
                on(lambda a: a.oip.infer),
                Access.PREDICT,
                Doc(f"{version}/infer", oip_docs.version_infer_op, group="model"),
                oip=True,
            ),
        ]
    if settings.train_endpoint:
        train = f"{model}/train"
        one = f"{train}/{{uuid}}"
        logs = f"{one}/logs"
        listed += [
            Endpoint(
                "POST",
                train,
                on(lambda a: a.api.start_training),
                Access.PROTECTED,
                Doc(f"{train}/", openapi.train_op, group="model"),
            ),
            Endpoint(
                "GET",
                train,
                on(lambda a: a.api.trainings),
                Access.PROTECTED,
                Doc(f"{train}/", openapi.trainings_op, group="model"),
            ),
            Endpoint(
                "GET",
                one,
                on(lambda a: a.api.training),
                Access.PROTECTED,
                Doc(one, openapi.training_op, uuid, group="model"),
            ),
            Endpoint(
                "DELETE",
                one,
                on(lambda a: a.api.cancel_training),
                Access.PROTECTED,
                Doc(one, openapi.cancel_training_op, uuid, group="model"),
            ),
            Endpoint(
                "GET",
                logs,
                on(lambda a: a.api.training_logs),
                Access.PROTECTED,
                Doc(logs, openapi.training_logs_op, uuid, group="model"),
            ),
        ]
    if settings.metrics_endpoint:
        listed.append(
            Endpoint(
                "GET",
                "/metrics",
                on(lambda a: a.metrics),
                Access.METRICS,
                Doc("/metrics", openapi.metrics_op),
                slash=False,
            )
        )
    if settings.doc_endpoint:
        listed += [
            Endpoint("GET", "/api", on(lambda a: a.ui.index), Access.PUBLIC),
            Endpoint("GET", "/ui", on(lambda a: a.ui.redirect), Access.PUBLIC),
            Endpoint(
                "GET",
                "/api/static",
                None,
                Access.PUBLIC,
                directory=docs.SwaggerUI.directory,
            ),
        ]
    return listed


def create_app(registry: Registry, settings: ApiSettings) -> web.Application:
    """Build a fresh application serving ``registry``.

    The registry's executors are started and closed by the caller; the app
    only routes requests to them.
    """
    in_flight = InFlight()
    meter = metrics.create(registry, settings)
    app = web.Application(
        client_max_size=settings.client_max_size,
        # Counting outermost (a shutdown waits for every request), then
        # request ids, so that the errors logged inside carry them; metrics
        # then see every answer; CORS preflights are answered before
        # authentication, which comes after error mapping.
        middlewares=[
            in_flight.middleware,
            requestids.middleware(),
            *metrics.middlewares(meter),
            *cors.middlewares(settings),
            error_middleware,
            *auth.middlewares(settings),
        ],
    )
    app[IN_FLIGHT] = in_flight
    if meter is not None:
        app[metrics.METER] = meter
    app[access.SECRETS] = frozenset(settings.auth_tokens)
    requestids.install(app)
    cors.add_signals(app, settings)
    # Every model's (every version's) argument reading and negotiation,
    # and its tensors, prepared once.
    service = InferenceService(registry, upload_dir=settings.upload_dir)
    app[SERVICE] = service
    plans = {}
    for each in registry.every():
        tensors = service.plan(each)
        plans[each.tag] = dataclasses.replace(
            plan.prepare(each.model),
            versions=tuple(registry.versions(each.name)),
            inputs=tensors.inputs,
            outputs=tensors.outputs,
        )
    defaults = [plans[registry[name].tag] for name in registry]

    base = settings.base_path
    spec_url = f"{base}/swagger.json"
    ui = docs.SwaggerUI(base_path=base, spec_url=spec_url)
    debug = DebugLog()
    if settings.debug_endpoint:
        app.cleanup_ctx.append(debug.capture)
    api = Handlers(
        registry,
        plans,
        settings,
        docs_url=ui.url if settings.doc_endpoint else None,
        spec_url=spec_url,
    )
    oip = OipHandlers(service)
    answers = Answers(
        api=api,
        oip=oip,
        shared=SharedPaths(api, oip),
        health=health.Health(registry),
        swagger=_swagger,
        ui=ui,
        debug=debug,
        metrics=metrics.handler(meter) if meter is not None else None,
    )
    served = declare(settings, answers)
    endpoints.add_routes(app, served, base)

    spec = openapi.build(defaults, settings, served)
    auth.document(spec, settings, served, list(registry))
    app[SPEC_TEXT] = dumps(spec)
    return app


__all__ = ["Answers", "create_app", "declare"]
