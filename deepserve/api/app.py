"""The application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from deepserve.api import (
    access,
    auth,
    cors,
    docs,
    health,
    media,
    metrics,
    openapi,
    requestids,
)
from deepserve.api.args import ArgSpec
from deepserve.api.debug import LogBuffer
from deepserve.api.errors import error_middleware
from deepserve.api.inflight import IN_FLIGHT, InFlight
from deepserve.api.routes import Handlers
from deepserve.runtime import Registry
from deepserve.settings import ApiSettings

SLASH = "{slash:/?}"


def model_ops(registry: Registry) -> dict[str, openapi.ModelOps]:
    """Prepare every model's argument parsing and negotiation once."""
    ops = {}
    for name, served in registry.items():
        model = served.model
        predict = (
            ArgSpec.prepare(model.predict_args(), negotiate_accept=True)
            if model.supports("predict")
            else None
        )
        train = (
            ArgSpec.prepare(model.train_args(), negotiate_accept=False)
            if model.supports("train")
            else None
        )
        ops[name] = openapi.ModelOps(
            name=name,
            predict=predict,
            train=train,
            offer=media.Offer.from_accept_field(predict.accept if predict else None),
            response_schema=model.response_schema,
        )
    return ops


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
    app[access.SECRETS] = frozenset(settings.auth_tokens)
    requestids.install(app)
    cors.add_signals(app, settings)
    ops = model_ops(registry)
    spec = openapi.build(list(ops.values()), settings)
    metrics.document(spec, meter)
    auth.document(spec, settings)
    spec_text = media.dumps(spec)

    base = settings.base_path
    spec_url = f"{base}/swagger.json"
    docs_url = (
        docs.add_routes(app, base_path=base, spec_url=spec_url)
        if settings.doc_endpoint
        else None
    )
    h = Handlers(registry, ops, settings, docs_url=docs_url, spec_url=spec_url)

    async def swagger(_request: web.Request) -> web.Response:
        return web.Response(text=spec_text, content_type=media.JSON)

    r = app.router
    r.add_get(base + "/" if not base else base + SLASH, h.versions, allow_head=False)
    r.add_get(spec_url, swagger, allow_head=False)
    r.add_get(f"{base}/v2{SLASH}", h.version, allow_head=False)
    r.add_get(f"{base}/v2/models{SLASH}", h.models, allow_head=False)
    health.add_routes(app, registry, base)
    model = f"{base}/v2/models/{{name}}"
    r.add_get(f"{model}{SLASH}", h.model, allow_head=False)
    if settings.predict_endpoint:
        r.add_post(f"{model}/predict{SLASH}", h.predict)
    if settings.train_endpoint:
        r.add_post(f"{model}/train{SLASH}", h.start_training)
        r.add_get(f"{model}/train{SLASH}", h.trainings, allow_head=False)
        r.add_get(f"{model}/train/{{uuid}}{SLASH}", h.training, allow_head=False)
        r.add_delete(f"{model}/train/{{uuid}}{SLASH}", h.cancel_training)
        r.add_get(
            f"{model}/train/{{uuid}}/logs{SLASH}", h.training_logs, allow_head=False
        )
    if settings.debug_endpoint:
        _add_debug(app, base)
    metrics.add_routes(app, meter, base)
    return app


def _add_debug(app: web.Application, base: str) -> None:
    buffer = LogBuffer()

    async def capture(_app: web.Application) -> AsyncIterator[None]:
        logger = logging.getLogger("deepserve")
        logger.addHandler(buffer)
        try:
            yield
        finally:
            logger.removeHandler(buffer)

    async def debug(_request: web.Request) -> web.Response:
        return web.Response(text=buffer.text(), content_type="text/plain")

    app.cleanup_ctx.append(capture)
    app.router.add_get(f"{base}/v2/debug{SLASH}", debug, allow_head=False)


__all__ = ["create_app"]
