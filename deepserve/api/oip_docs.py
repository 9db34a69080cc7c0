"""The OpenAPI operations of the Open Inference Protocol's REST endpoints,
and of the paths naming a model's version.

One function per operation, as in :mod:`deepserve.api.openapi` (see
:class:`~deepserve.api.endpoints.Doc`); :func:`register` adds the
protocol's schemas to a document.
"""

from __future__ import annotations

import http
from typing import TYPE_CHECKING, Any

from deepserve.api.schemas import RETRY_AFTER, WWW_AUTHENTICATE
from deepserve.model import DATATYPES
from deepserve.operations.negotiation import JSON
from deepserve.operations.plan import ModelPlan

if TYPE_CHECKING:
    from deepserve.api.openapi import _Builder

#: The statuses an inference may answer with, besides 200.
INFER_ERRORS = (400, 404, 413, 500, 503, 504)

_PARAMETERS = {
    "type": "object",
    "additionalProperties": True,
    "description": "Parameters: names to strings, numbers or booleans.",
}
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 0}}

#: The protocol's schemas, as JSON schemas.
SCHEMAS: dict[str, dict[str, Any]] = {
    "InferenceError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What went wrong"}},
    },
    "TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string", "enum": list(DATATYPES)},
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": -1},
                "description": "-1: any size",
            },
        },
    },
    "RequestInput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": _SHAPE,
            "datatype": {"type": "string", "enum": list(DATATYPES)},
            "parameters": _PARAMETERS,
            "data": {
                "description": "The elements in row-major order, flat or nested "
                "(absent when binary_data_size is a parameter)",
            },
        },
    },
    "RequestOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
    },
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": _PARAMETERS,
            "inputs": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/RequestInput"},
            },
            "outputs": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/RequestOutput"},
            },
        },
    },
    "ResponseOutput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": _SHAPE,
            "datatype": {"type": "string", "enum": list(DATATYPES)},
            "parameters": _PARAMETERS,
            "data": {"type": "array", "items": {}},
        },
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": _PARAMETERS,
            "outputs": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ResponseOutput"},
            },
        },
    },
}

#: The keys the protocol adds to DEEPaaS's model metadata.
MODEL_KEYS: dict[str, Any] = {
    "versions": {"type": "array", "items": {"type": "string"}},
    "platform": {"type": "string"},
    "inputs": {
        "type": "array",
        "items": {"$ref": "#/components/schemas/TensorMetadata"},
    },
    "outputs": {
        "type": "array",
        "items": {"$ref": "#/components/schemas/TensorMetadata"},
    },
}
#: The keys the protocol adds to DEEPaaS's ``GET /v2`` document.
SERVER_KEYS: dict[str, Any] = {
    "name": {"type": "string", "description": "The server: deepserve"},
    "extensions": {"type": "array", "items": {"type": "string"}},
}


def register(b: _Builder) -> None:
    """Add the protocol's schemas to the document being built."""
    for name, schema in SCHEMAS.items():
        b.spec.components.schema(name, component=schema)


def merge_keys(doc: dict[str, Any]) -> None:
    """Add the protocol's keys to the schemas of the shared paths' documents
    (:class:`~deepserve.api.schemas.Version` and ``ModelMeta``)."""
    schemas = doc.get("components", {}).get("schemas", {})
    for name, keys in (("Version", SERVER_KEYS), ("ModelMeta", MODEL_KEYS)):
        if name in schemas:
            schemas[name].setdefault("properties", {}).update(keys)


def errors(*codes: int) -> dict[str, Any]:
    """Error responses in the protocol's shape."""
    body = {JSON: {"schema": {"$ref": "#/components/schemas/InferenceError"}}}
    responses: dict[str, Any] = {}
    for code in codes:
        response = {"description": http.HTTPStatus(code).phrase, "content": body}
        if code == 503:
            response["headers"] = {"Retry-After": RETRY_AFTER}
        elif code == 401:
            response["headers"] = {"WWW-Authenticate": WWW_AUTHENTICATE}
        responses[str(code)] = response
    return responses


def _version_param(plan: ModelPlan) -> dict[str, Any]:
    return {
        "name": "version",
        "in": "path",
        "required": True,
        "description": f"A version of model '{plan.name}' (the first is the default)",
        "schema": {"type": "string", "enum": list(plan.versions)},
    }


def _inputs(plan: ModelPlan) -> str:
    if not plan.inputs:
        return "any input tensors"
    return ", ".join(
        f"{spec.name} ({spec.datatype} {list(spec.shape)})" for spec in plan.inputs
    )


def infer_op(_b: _Builder, plan: ModelPlan | None) -> dict[str, Any] | None:
    if plan is None or plan.predict is None:
        return None
    return {
        "tags": [f"model: {plan.name}"],
        "summary": f"Infer with model '{plan.name}' (Open Inference Protocol)",
        "description": f"Takes {_inputs(plan)}. With the binary tensor data "
        "extension, the Inference-Header-Content-Length header gives the "
        "length of the JSON part.",
        "operationId": f"{plan.name}.infer",
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}
            },
        },
        "responses": {
            "200": {
                "description": "The outputs",
                "content": {
                    JSON: {"schema": {"$ref": "#/components/schemas/InferenceResponse"}}
                },
            },
            **errors(*INFER_ERRORS),
        },
    }


def versioned(
    op: dict[str, Any] | None, plan: ModelPlan, what: str
) -> dict[str, Any] | None:
    """``op`` for the path naming one of the model's versions; none for a
    model without versions."""
    if op is None or not plan.versions:
        return None
    op = {**op, "operationId": f"{plan.name}.version.{what}"}
    op["parameters"] = [*op.get("parameters", []), _version_param(plan)]
    op["summary"] = op["summary"].replace(
        f"'{plan.name}'", f"'{plan.name}' (a version)"
    )
    return op


def version_infer_op(b: _Builder, plan: ModelPlan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    return versioned(infer_op(b, plan), plan, "infer")
