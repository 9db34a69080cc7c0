"""The OpenAPI 3.0 document, generated from the models' own declarations."""

from __future__ import annotations

import http
import itertools
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import marshmallow
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.openapi import OpenAPIConverter
from marshmallow import fields, validate
from marshmallow.warnings import Marshmallow4Warning

import deepserve
from deepserve import exceptions as exc
from deepserve.api import health, oip_docs, schemas
from deepserve.api.endpoints import NAME, Endpoint
from deepserve.api.pagination import MAX_LIMIT
from deepserve.api.schemas import RETRY_AFTER, WWW_AUTHENTICATE
from deepserve.jobs import STATUSES
from deepserve.operations.arguments import (
    ArgSpec,
    external_name,
    is_multiple,
    location_of,
)
from deepserve.operations.negotiation import ACCEPT, JSON, Offer, is_json
from deepserve.operations.plan import ModelPlan
from deepserve.settings import ApiSettings

OPENAPI_VERSION = "3.0.3"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
#: Header parameters OpenAPI forbids describing as parameters.
_RESERVED_HEADERS = {"accept", "content-type", "authorization"}

DESCRIPTION = (
    "Machine-learning models served by deepserve. Every model offers its "
    "metadata, predictions and (when it implements them) trainings; the "
    "arguments of each operation are the model's own."
)


class _Converter(OpenAPIConverter):
    """apispec's converter, answering alike on every apispec release that
    deepserve supports: 3.3 (what DEEPaaS 2.x installs) writes ``int32``
    and ``float`` formats that newer releases dropped (a Python ``int`` or
    ``float`` has neither bound), and leaves out what newer releases say of
    unknown keys, of a ``Dict``'s values and of ``None`` among a nullable
    field's choices. The document is the same with both for the fields
    DEEPaaS models declare; rarer ones (``TimeDelta``, ``IP``, ``Enum``,
    ``Pluck``) are described in more detail by 6.x."""

    def field2property(self, field: fields.Field) -> dict[str, Any]:
        with warnings.catch_warnings():
            # apispec 3.3 reads the 'missing' attribute marshmallow 4 drops.
            warnings.simplefilter("ignore", Marshmallow4Warning)
            prop: dict[str, Any] = super().field2property(field)
        if (
            isinstance(field, fields.Integer | fields.Float)
            and prop.get("format") in ("int32", "float")
            and "format" not in field.metadata
        ):
            del prop["format"]
        enum = prop.get("enum")
        if (
            field.allow_none
            and "enum" not in field.metadata
            and isinstance(enum, list)
            and None not in enum
        ):
            enum.append(None)  # the choices of a nullable field, as 6.x says
        values = getattr(field, "value_field", None)
        if isinstance(field, fields.Dict) and "additionalProperties" not in prop:
            prop["additionalProperties"] = (
                self.field2property(values) if values is not None else {}
            )
        return prop

    def schema2jsonschema(self, schema: marshmallow.Schema) -> dict[str, Any]:
        result: dict[str, Any] = super().schema2jsonschema(schema)  # type: ignore[no-untyped-call]
        unknown = getattr(schema, "unknown", None)
        if "additionalProperties" not in result and unknown != marshmallow.EXCLUDE:
            result["additionalProperties"] = unknown == marshmallow.INCLUDE
        return result


class _Plugin(MarshmallowPlugin):
    Converter = _Converter


class _Builder:
    """The document being written, and what its operations share."""

    def __init__(self) -> None:
        # No names: the models' nested schemas are inlined, so two models
        # with equally named schema classes cannot clash.
        self.plugin = _Plugin(
            schema_name_resolver=lambda _schema: None  # type: ignore[arg-type,return-value]
        )
        self.spec = APISpec(
            title="deepserve",
            version=deepserve.__version__,
            openapi_version=OPENAPI_VERSION,
            plugins=[self.plugin],
            info={"description": DESCRIPTION},
        )
        #: The error statuses the operations refer to.
        self.error_codes: set[int] = set()

    @property
    def converter(self) -> OpenAPIConverter:
        assert self.plugin.converter is not None  # set by APISpec
        return self.plugin.converter

    def errors(self, *codes: int) -> dict[str, Any]:
        """References to the shared error responses of ``codes``."""
        self.error_codes.update(codes)
        return error_refs(*codes)

    def json_schema(self, schema: type[marshmallow.Schema]) -> dict[str, Any]:
        result: dict[str, Any] = self.converter.schema2jsonschema(schema())  # type: ignore[no-untyped-call]
        return result

    def prop(self, field: fields.Field) -> dict[str, Any]:
        if location_of(field) == "files":
            out: dict[str, Any] = {"type": "string", "format": "binary"}
            if "description" in field.metadata:
                out["description"] = str(field.metadata["description"])
            return out
        result: dict[str, Any] = self.converter.field2property(field)
        if isinstance(result.get("required"), bool):  # old-style metadata
            del result["required"]
        if result.get("type") == "file":
            result["type"] = "string"
        _unchecked_enum(field, result)
        return result

    def parameters(self, args: ArgSpec, where: str) -> list[dict[str, Any]]:
        params = []
        for name, field in args.by_location(where).items():  # type: ignore[arg-type]
            key = external_name(name, field)
            if where == "headers" and key.lower() in _RESERVED_HEADERS:
                continue
            schema = self.prop(field)
            param: dict[str, Any] = {
                "name": key,
                "in": "query" if where == "query" else "header",
                "required": bool(field.required),
                "schema": schema,
            }
            if "description" in schema:
                param["description"] = schema["description"]
            if where == "query" and is_multiple(field):
                param["style"], param["explode"] = "form", True
            params.append(param)
        return params

    def object_schema(self, named: dict[str, fields.Field]) -> dict[str, Any]:
        props = {external_name(n, f): self.prop(f) for n, f in named.items()}
        required = [external_name(n, f) for n, f in named.items() if f.required]
        schema: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            schema["required"] = required
        return schema

    def request_body(self, args: ArgSpec) -> dict[str, Any] | None:
        content: dict[str, Any] = {}
        multipart = args.by_location("form", "files")
        if multipart:
            content["multipart/form-data"] = {"schema": self.object_schema(multipart)}
        # Form arguments may come in a JSON body instead. (Query arguments
        # are read from a body too when the query string lacks them, but
        # documenting both places would invite giving them twice: a 422.)
        values = args.by_location("form", "json")
        if values:
            content[JSON] = {"schema": self.object_schema(values)}
        if not content:
            return None
        required = any(f.required for f in multipart.values())
        return {"required": required, "content": content}


def _unchecked_enum(field: fields.Field, prop: dict[str, Any]) -> None:
    """An ``enum=`` given only as DEEPaaS-style metadata is not validated
    (DEEPaaS does not check it either): say the values, without the
    ``enum`` that would claim the server refuses others."""
    values = field.metadata.get("enum")
    if values is None or any(isinstance(v, validate.OneOf) for v in field.validators):
        return
    prop.pop("enum", None)
    listed = ", ".join(str(v) for v in values)
    note = f"Suggested values: {listed} (others are accepted too)."
    described = str(prop.get("description", "")).strip()
    if described and not described.endswith((".", "!", "?")):
        described += "."
    prop["description"] = f"{described} {note}".strip()
    if values and "example" not in prop and "default" not in prop:
        prop["example"] = values[0]


def _int_param(name: str, description: str, minimum: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if name == "limit":
        schema["maximum"] = MAX_LIMIT
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


#: Query parameters of a list of trainings.
LIST_PARAMS = [
    {
        "name": "status",
        "in": "query",
        "required": False,
        "description": "Only trainings with this status",
        "schema": {"type": "string", "enum": list(STATUSES)},
    },
    _int_param("limit", "Most trainings to answer (default: all)", 1),
    _int_param("offset", "Trainings to skip first (default: 0)", 0),
]
#: Headers of a list of trainings.
PAGE_HEADERS = {
    "X-Total-Count": {
        "description": "How many trainings match, over all pages",
        "schema": {"type": "integer"},
    },
    "Link": {
        "description": (
            "With 'limit': the first, prev, next and last pages (RFC 8288)"
        ),
        "schema": {"type": "string"},
    },
}
#: Query parameters of a training's output.
LOG_PARAMS = [
    _int_param("since", "Only lines after this cursor (default: 0, all)", 0),
    _int_param("limit", f"Most lines to answer (default: {MAX_LIMIT})", 1),
]


#: Sent with a 503 worth retrying (a worker replaced, a model starting, a
#: full queue); not when the server is shutting down.
#: On the answers of predict and train (unknown-arguments = warn).
UNKNOWN_ARGUMENTS = {
    "Deepserve-Unknown-Arguments": {
        "description": (
            "Only when the request carried arguments the model does not take "
            "(ignored): their names, sorted, comma-separated"
        ),
        "schema": {"type": "string"},
    }
}


#: The error responses operations share: status -> (name under
#: ``components/responses``, description). Each is declared once there and
#: referred to by every operation that may answer it.
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: (
        "BadRequest",
        "Bad Request: the body cannot be read (invalid JSON, a JSON body "
        "that is not an object, a broken multipart body)",
    ),
    401: (
        "Unauthorized",
        "Unauthorized: no bearer token, or one the server does not accept",
    ),
    404: ("NotFound", "Not Found: no such model (or training)"),
    413: (
        "PayloadTooLarge",
        "Request Entity Too Large: the body, or its files, exceed a size "
        "limit ('limit' says it, in bytes)",
    ),
    422: (
        "UnprocessableEntity",
        "Unprocessable Entity: arguments missing or invalid ('errors' names "
        "each field and its problems)",
    ),
    500: (
        "InternalServerError",
        "Internal Server Error: the model raised an exception ('error_type' "
        "and 'detail' say which), returned something its schema or media type "
        "does not allow, or deepserve failed",
    ),
    501: (
        "NotImplemented",
        "Not Implemented: the model does not implement this operation",
    ),
    503: (
        "ServiceUnavailable",
        "Service Unavailable: the model cannot take the request now (a worker "
        "died, the model is starting, its queue is full, the training store "
        "is unavailable, the server is shutting down); the message says why",
    ),
    504: (
        "GatewayTimeout",
        "Gateway Timeout: the model did not answer within its deadline",
    ),
    507: (
        "InsufficientStorage",
        "Insufficient Storage: no disk space left to receive the upload",
    ),
}

_CODES = {name: code for code, (name, _) in ERROR_RESPONSES.items()}

#: The challenge sent with a 401.


#: The model the error examples name.
EXAMPLE_MODEL = "my-model"

#: One case of each error status, as the exception deepserve raises for it
#: (given the body size limit): the source of the responses' examples.
_EXAMPLES: dict[int, Callable[[int], exc.DeepserveError]] = {
    400: lambda _: exc.MalformedRequest("The JSON body must be an object of arguments"),
    401: lambda _: exc.Unauthorized(invalid=False),
    404: lambda _: exc.ModelNotFound("nope"),
    413: lambda limit: exc.PayloadTooLarge(limit),
    422: lambda _: exc.BadInput(
        "Invalid arguments: text", {"text": ["Missing data for required field."]}
    ),
    500: lambda _: exc.ModelFailed(
        EXAMPLE_MODEL, "ValueError", "could not convert string to float: 'abc'"
    ),
    501: lambda _: exc.NotSupported(EXAMPLE_MODEL, "train"),
    503: lambda _: exc.Overloaded(EXAMPLE_MODEL, 8),
    504: lambda _: exc.DeadlineExceeded(EXAMPLE_MODEL, 30),
    507: lambda _: exc.InsufficientStorage(),
}
#: What an error body may say besides its code, title and message.
_EXTRAS = ("model", "errors", "limit", "error_type", "detail")


def error_example(code: int, body_limit: int) -> dict[str, Any]:
    """The body deepserve answers for one case of error status ``code``."""
    error = _EXAMPLES[code](body_limit)
    body: dict[str, Any] = {
        "code": code,
        "title": http.HTTPStatus(code).phrase,
        "message": error.message,
    }
    for key in _EXTRAS:
        if getattr(error, key, None) is not None:
            body[key] = getattr(error, key)
    return body


def error_response(code: int, settings: ApiSettings | None = None) -> dict[str, Any]:
    """The shared response of error status ``code``: its description, the
    :class:`~deepserve.api.schemas.Error` body with an example, and its
    headers."""
    limit = (settings or ApiSettings()).client_max_size
    response: dict[str, Any] = {
        "description": ERROR_RESPONSES[code][1],
        "content": {JSON: {"schema": ERROR_REF, "example": error_example(code, limit)}},
    }
    if code == 503:
        response["headers"] = {"Retry-After": RETRY_AFTER}
    elif code == 401:
        response["headers"] = {"WWW-Authenticate": WWW_AUTHENTICATE}
    return response


def error_refs(*codes: int) -> dict[str, Any]:
    """An operation's error responses: references to the shared ones, which
    :func:`declare_errors` adds to the document."""
    return {
        str(code): {"$ref": f"#/components/responses/{ERROR_RESPONSES[code][0]}"}
        for code in codes
    }


def declare_errors(
    doc: dict[str, Any], codes: Iterable[int], settings: ApiSettings | None = None
) -> None:
    """Declare the shared error responses of ``codes`` in ``doc``, once
    each, in the order of their status codes."""
    declared = doc.setdefault("components", {}).setdefault("responses", {})
    for code in sorted(set(codes)):
        declared.setdefault(ERROR_RESPONSES[code][0], error_response(code, settings))
    doc["components"]["responses"] = dict(
        # Others' responses (none yet) after these.
        sorted(declared.items(), key=lambda item: _CODES.get(item[0], 1000))
    )


def refer_errors(doc: dict[str, Any], *codes: int) -> dict[str, Any]:
    """References to the shared error responses of ``codes``, declared in
    ``doc`` if they are not yet: for what adds operations to a built
    document (authentication's ``401``)."""
    declare_errors(doc, codes)
    return error_refs(*codes)


def _ok(schema_ref: str, description: str = "Success") -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "content": {
                JSON: {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}
            },
        }
    }


def build(
    models: list[ModelPlan],
    settings: ApiSettings,
    endpoints: Sequence[Endpoint] | None = None,
) -> dict[str, Any]:
    """The whole document, as a JSON-ready dict: the operation of each of
    ``endpoints`` that has one (by default, those ``settings`` declare),
    written once per model for the paths that name one."""
    if endpoints is None:
        from deepserve.api.app import declare

        endpoints = declare(settings)
    b = _Builder()
    for name in (
        "Error",
        "Link",
        "Version",
        "Versions",
        "ModelMeta",
        "ModelList",
        "Prediction",
        "TrainingResult",
        "Training",
        "LogLine",
        "TrainingLogs",
    ):
        b.spec.components.schema(name, schema=getattr(schemas, name))
    for name in ("Liveness", "Readiness", "ModelReadiness"):
        b.spec.components.schema(name, schema=getattr(health, name))
    oip_docs.register(b)
    for ops in models:
        b.spec.tag(
            {"name": _tag(ops), "description": f"Operations of model '{ops.name}'"}
        )

    #: path -> (operations by method, the path's own parameters)
    items: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}

    def add(endpoint: Endpoint, ops: ModelPlan | None) -> None:
        assert endpoint.doc is not None
        operation = endpoint.doc.operation(b, ops)
        if operation is None:
            return
        path = endpoint.doc.path.replace(NAME, ops.name) if ops else endpoint.doc.path
        operations, _ = items.setdefault(
            path, ({}, [dict(p) for p in endpoint.doc.parameters])
        )
        operations[endpoint.method.lower()] = operation

    documented = [e for e in endpoints if e.doc is not None]
    # A run of one group's endpoints naming a model is written model by model.
    runs = itertools.groupby(
        documented, lambda e: (e.doc.group if e.doc else "", e.per_model)
    )
    for (_, per_model), run in runs:
        group = list(run)
        for model in models if per_model else [None]:
            for endpoint in group:
                add(endpoint, model)
    for path, (operations, parameters) in items.items():
        b.spec.path(path, operations=operations, parameters=parameters or None)
    doc: dict[str, Any] = b.spec.to_dict()
    declare_errors(doc, b.error_codes, settings)
    oip_docs.merge_keys(doc)
    if settings.base_path:
        doc["servers"] = [{"url": settings.base_path}]
    return doc


def _tag(ops: ModelPlan) -> str:
    return f"model: {ops.name}"


def _of(ops: ModelPlan | None) -> ModelPlan:
    """The model a per-model operation is written for."""
    if ops is None:
        raise ValueError("an operation of a model's path, written for no model")
    return ops


def _probe(schema: str, summary: str, false_means: str) -> dict[str, Any]:
    """A health operation: 200 when true, 503 (same body) when false."""
    content = {JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    return {
        "tags": ["health"],
        "summary": summary,
        "responses": {
            "200": {"description": "Yes", "content": content},
            "503": {
                "description": f"No: {false_means}",
                "content": content,
                "headers": {"Retry-After": RETRY_AFTER},
            },
        },
    }


# -- The operations, one function each (see :class:`Doc`) ----------------------


def versions_op(_b: _Builder, _ops: ModelPlan | None) -> dict[str, Any]:
    return {
        "tags": ["versions"],
        "summary": "List the API versions and documentation links",
        "responses": _ok("Versions"),
    }


def version_op(_b: _Builder, _ops: ModelPlan | None) -> dict[str, Any]:
    return {
        "tags": ["versions"],
        "summary": "Describe the V2 API",
        "responses": _ok("Version"),
    }


def models_op(_b: _Builder, _ops: ModelPlan | None) -> dict[str, Any]:
    return {
        "tags": ["models"],
        "summary": "List the served models with their metadata",
        "responses": _ok("ModelList"),
    }


def live_op(_b: _Builder, _ops: ModelPlan | None) -> dict[str, Any]:
    return _probe(
        "Liveness", "Whether the server answers (liveness probe)", "never sent"
    )


def ready_op(_b: _Builder, _ops: ModelPlan | None) -> dict[str, Any]:
    return _probe(
        "Readiness",
        "Whether every model is started and warmed (readiness probe)",
        "models still warming, or the server is shutting down",
    )


def model_ready_op(b: _Builder, ops: ModelPlan | None) -> dict[str, Any]:
    name = _of(ops).name
    ready = _probe(
        "ModelReadiness",
        f"Whether model '{name}' is started and warmed",
        "the model is still warming, or the server is shutting down",
    )
    ready["operationId"] = f"{name}.ready"
    ready["responses"].update(b.errors(404))
    return ready


def debug_op(_b: _Builder, _ops: ModelPlan | None) -> dict[str, Any]:
    return {
        "tags": ["debug"],
        "summary": "Recent server log records (debug endpoint)",
        "responses": {
            "200": {
                "description": "Log text",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }


def metadata_op(b: _Builder, ops: ModelPlan | None) -> dict[str, Any]:
    ops = _of(ops)
    return {
        "tags": [_tag(ops)],
        "summary": f"Metadata of model '{ops.name}'",
        "operationId": f"{ops.name}.metadata",
        "responses": {**_ok("ModelMeta"), **b.errors(404)},
    }


def predict_op(b: _Builder, ops: ModelPlan | None) -> dict[str, Any] | None:
    ops = _of(ops)
    if ops.predict is None:
        return None
    args = ops.predict
    params = b.parameters(args, "query") + b.parameters(args, "headers")
    accept = _accept_schema(args, ops.offer)
    if accept is not None and args.accept_from != "form":
        description = accept.pop("description")
        params.append(
            {
                "name": ACCEPT,
                "in": "query",
                "required": False,
                "description": description,
                "schema": accept,
            }
        )
    content: dict[str, Any] = {}
    for media in ops.offer.types:
        if is_json(media):
            if ops.response_schema is not None:
                content[media] = {"schema": b.json_schema(ops.response_schema)}
            else:
                content[media] = {"schema": {"$ref": "#/components/schemas/Prediction"}}
        elif media.startswith("text/"):
            content[media] = {"schema": {"type": "string"}}
        else:
            content[media] = {"schema": {"type": "string", "format": "binary"}}
    op: dict[str, Any] = {
        "tags": [_tag(ops)],
        "summary": f"Predict with model '{ops.name}'",
        "operationId": f"{ops.name}.predict",
        "parameters": params,
        "responses": {
            "200": {
                "description": "The prediction",
                "headers": UNKNOWN_ARGUMENTS,
                "content": content,
            },
            **b.errors(400, 404, 413, 422, 500, 501, 503, 504, 507),
        },
    }
    body = b.request_body(args)
    if accept is not None and args.accept_from == "form":
        body = body or {"required": False, "content": {}}
        for where in ("multipart/form-data", JSON):
            schema = body["content"].setdefault(
                where, {"schema": {"type": "object", "properties": {}}}
            )["schema"]
            schema["properties"][ACCEPT] = accept
    if body is not None:
        op["requestBody"] = body
    return op


def _accept_schema(args: ArgSpec, offer: Offer) -> dict[str, Any] | None:
    """The ``accept`` argument, where it is one: not when the model reads it
    from the ``Accept`` header (which the response types document)."""
    if args.accept is None or args.accept_from == "headers":
        return None
    description = args.accept.metadata.get("description") or (
        "Media type of the response (one of the types offered; a type a "
        "wildcard offer covers also works); without it, the Accept header "
        "chooses"
    )
    return {
        "type": "string",
        "enum": list(offer.types),
        "default": offer.default,
        "description": str(description),
    }


def train_op(b: _Builder, ops: ModelPlan | None) -> dict[str, Any] | None:
    ops = _of(ops)
    if ops.train is None:
        return None
    args = ops.train
    op: dict[str, Any] = {
        "tags": [_tag(ops)],
        "summary": f"Start a training of model '{ops.name}'",
        "operationId": f"{ops.name}.train",
        "parameters": b.parameters(args, "query") + b.parameters(args, "headers"),
        "responses": {
            "200": {
                **_ok("Training", "The training started")["200"],
                "headers": UNKNOWN_ARGUMENTS,
            },
            **b.errors(400, 404, 413, 422, 501, 503, 507),
        },
    }
    body = b.request_body(args)
    if body is not None:
        op["requestBody"] = body
    return op


def trainings_op(b: _Builder, ops: ModelPlan | None) -> dict[str, Any] | None:
    ops = _of(ops)
    if ops.train is None:
        return None
    return {
        "tags": [_tag(ops)],
        "summary": f"List the trainings of model '{ops.name}'",
        "operationId": f"{ops.name}.trainings",
        "parameters": LIST_PARAMS,
        "responses": {
            "200": {
                "description": "Trainings of this model, oldest first",
                "headers": PAGE_HEADERS,
                "content": {
                    JSON: {
                        "schema": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Training"},
                        }
                    }
                },
            },
            **b.errors(404, 422, 503),
        },
    }


#: The path parameter naming a training.
UUID_PARAM = {
    "name": "uuid",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Training identifier",
}


def training_op(b: _Builder, ops: ModelPlan | None) -> dict[str, Any] | None:
    ops = _of(ops)
    if ops.train is None:
        return None
    return {
        "tags": [_tag(ops)],
        "summary": "Status and result of a training",
        "operationId": f"{ops.name}.training",
        "responses": {**_ok("Training"), **b.errors(404)},
    }


def cancel_training_op(b: _Builder, ops: ModelPlan | None) -> dict[str, Any] | None:
    ops = _of(ops)
    if ops.train is None:
        return None
    return {
        "tags": [_tag(ops)],
        "summary": "Cancel a running training",
        "description": (
            "Stops the training (its process is terminated) and keeps "
            "its record, 'cancelled', with its output so far. A "
            "training another replica runs is stopped at that "
            "replica's next heartbeat; the answer may still say "
            "'running' then. A training that already ended is "
            "answered as it is."
        ),
        "operationId": f"{ops.name}.cancel_training",
        "responses": {
            **_ok("Training", "The training, cancelled"),
            **b.errors(404),
        },
    }


def training_logs_op(b: _Builder, ops: ModelPlan | None) -> dict[str, Any] | None:
    ops = _of(ops)
    if ops.train is None:
        return None
    return {
        "tags": [_tag(ops)],
        "summary": "Output and log records of a training",
        "description": (
            "Lines the training wrote to stdout and stderr and its log "
            "records, oldest first, while it runs and after. Follow a "
            "running training by passing the answer's 'next' as 'since'."
        ),
        "operationId": f"{ops.name}.training_logs",
        "parameters": LOG_PARAMS,
        "responses": {
            **_ok("TrainingLogs"),
            **b.errors(404, 422, 503),
        },
    }


def metrics_op(_b: _Builder, _ops: ModelPlan | None) -> dict[str, Any]:
    return {
        "tags": ["metrics"],
        "summary": "Prometheus metrics (text exposition format)",
        "operationId": "metrics",
        "responses": {
            "200": {
                "description": "The metrics",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }


# -- The paths naming one of a model's versions ----------------------------------


def version_metadata_op(b: _Builder, ops: ModelPlan | None) -> dict[str, Any] | None:
    return oip_docs.versioned(metadata_op(b, ops), _of(ops), "metadata")


def version_predict_op(b: _Builder, ops: ModelPlan | None) -> dict[str, Any] | None:
    return oip_docs.versioned(predict_op(b, ops), _of(ops), "predict")


def version_ready_op(b: _Builder, ops: ModelPlan | None) -> dict[str, Any] | None:
    return oip_docs.versioned(model_ready_op(b, ops), _of(ops), "ready")
