"""The messages and service of the Open Inference Protocol's gRPC API.

They are those of KServe's ``grpc_predict_v2.proto`` (package
``inference``; Triton's ``grpc_service.proto`` is a superset with the same
names and numbers), described here in Python as a
:class:`~google.protobuf.descriptor_pb2.FileDescriptorProto` and built at
import time: no ``protoc``, no generated files, the same code for every
protobuf release from 4.25 on.

The descriptors live in a pool of their own, so these classes coexist with
other copies of the same ``inference`` package in one process (such as the
Triton client's ``service_pb2``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "FILE",
    "MESSAGES",
    "METHODS",
    "SERVICE",
    "InferParameter",
    "InferTensorContents",
    "ModelInferRequest",
    "ModelInferResponse",
    "ModelMetadataRequest",
    "ModelMetadataResponse",
    "ModelReadyRequest",
    "ModelReadyResponse",
    "ServerLiveRequest",
    "ServerLiveResponse",
    "ServerMetadataRequest",
    "ServerMetadataResponse",
    "ServerReadyRequest",
    "ServerReadyResponse",
]

PACKAGE = "inference"
#: The service's full name, as in a method's path ``/<SERVICE>/<method>``.
SERVICE = f"{PACKAGE}.GRPCInferenceService"

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL = _F.LABEL_OPTIONAL
_REPEATED = _F.LABEL_REPEATED
_SCALARS = {
    "bool": _F.TYPE_BOOL,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}

#: A field: (name, number, type, repeated). ``type`` is a scalar type's
#: name, ``"map<Value>"`` for a ``map<string, Value>``, or a message's name
#: relative to the package (``"ModelInferRequest.InferInputTensor"``).
_Field = tuple[str, int, str, bool]


def _message(
    name: str,
    fields: list[_Field],
    *,
    nested: tuple[descriptor_pb2.DescriptorProto, ...] = (),
    oneof: str | None = None,
    scope: str = "",
) -> descriptor_pb2.DescriptorProto:
    """A message type; ``scope`` is the full name of the message holding it
    (the package for a top-level one). With ``oneof``, every field belongs
    to that one-of."""
    msg = descriptor_pb2.DescriptorProto(name=name)
    full_name = f"{scope or PACKAGE}.{name}"
    msg.nested_type.extend(nested)
    if oneof is not None:
        msg.oneof_decl.add(name=oneof)
    for field_name, number, kind, repeated in fields:
        field = msg.field.add(
            name=field_name,
            number=number,
            label=_REPEATED if repeated else _OPTIONAL,
            json_name=_json_name(field_name),
        )
        if oneof is not None:
            field.oneof_index = 0
        if kind in _SCALARS:
            field.type = _SCALARS[kind]
        elif kind.startswith("map<"):
            # A map is a repeated nested "<Field>Entry" message of key and value.
            entry_name = "".join(p.title() for p in field_name.split("_")) + "Entry"
            entry = _message(
                entry_name,
                [("key", 1, "string", False), ("value", 2, kind[4:-1], False)],
                scope=full_name,
            )
            entry.options.map_entry = True
            msg.nested_type.append(entry)
            field.label = _REPEATED
            field.type = _F.TYPE_MESSAGE
            field.type_name = f".{full_name}.{entry_name}"
        else:
            field.type = _F.TYPE_MESSAGE
            field.type_name = f".{PACKAGE}.{kind}"
    return msg


def _json_name(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(p.title() for p in rest)


def _tensor(name: str, scope: str) -> descriptor_pb2.DescriptorProto:
    """An input or output tensor of an inference request or response."""
    return _message(
        name,
        [
            ("name", 1, "string", False),
            ("datatype", 2, "string", False),
            ("shape", 3, "int64", True),
            ("parameters", 4, "map<InferParameter>", False),
            ("contents", 5, "InferTensorContents", False),
        ],
        scope=scope,
    )


def _file() -> descriptor_pb2.FileDescriptorProto:
    infer_request = f"{PACKAGE}.ModelInferRequest"
    infer_response = f"{PACKAGE}.ModelInferResponse"
    metadata_response = f"{PACKAGE}.ModelMetadataResponse"
    messages = [
        _message("ServerLiveRequest", []),
        _message("ServerLiveResponse", [("live", 1, "bool", False)]),
        _message("ServerReadyRequest", []),
        _message("ServerReadyResponse", [("ready", 1, "bool", False)]),
        _message(
            "ModelReadyRequest",
            [("name", 1, "string", False), ("version", 2, "string", False)],
        ),
        _message("ModelReadyResponse", [("ready", 1, "bool", False)]),
        _message("ServerMetadataRequest", []),
        _message(
            "ServerMetadataResponse",
            [
                ("name", 1, "string", False),
                ("version", 2, "string", False),
                ("extensions", 3, "string", True),
            ],
        ),
        _message(
            "ModelMetadataRequest",
            [("name", 1, "string", False), ("version", 2, "string", False)],
        ),
        _message(
            "ModelMetadataResponse",
            [
                ("name", 1, "string", False),
                ("versions", 2, "string", True),
                ("platform", 3, "string", False),
                ("inputs", 4, "ModelMetadataResponse.TensorMetadata", True),
                ("outputs", 5, "ModelMetadataResponse.TensorMetadata", True),
                ("properties", 6, "map<string>", False),
            ],
            nested=(
                _message(
                    "TensorMetadata",
                    [
                        ("name", 1, "string", False),
                        ("datatype", 2, "string", False),
                        ("shape", 3, "int64", True),
                    ],
                    scope=metadata_response,
                ),
            ),
        ),
        _message(
            "ModelInferRequest",
            [
                ("model_name", 1, "string", False),
                ("model_version", 2, "string", False),
                ("id", 3, "string", False),
                ("parameters", 4, "map<InferParameter>", False),
                ("inputs", 5, "ModelInferRequest.InferInputTensor", True),
                ("outputs", 6, "ModelInferRequest.InferRequestedOutputTensor", True),
                ("raw_input_contents", 7, "bytes", True),
            ],
            nested=(
                _tensor("InferInputTensor", infer_request),
                _message(
                    "InferRequestedOutputTensor",
                    [
                        ("name", 1, "string", False),
                        ("parameters", 2, "map<InferParameter>", False),
                    ],
                    scope=infer_request,
                ),
            ),
        ),
        _message(
            "ModelInferResponse",
            [
                ("model_name", 1, "string", False),
                ("model_version", 2, "string", False),
                ("id", 3, "string", False),
                ("parameters", 4, "map<InferParameter>", False),
                ("outputs", 5, "ModelInferResponse.InferOutputTensor", True),
                ("raw_output_contents", 6, "bytes", True),
            ],
            nested=(_tensor("InferOutputTensor", infer_response),),
        ),
        _message(
            "InferParameter",
            [
                ("bool_param", 1, "bool", False),
                ("int64_param", 2, "int64", False),
                ("string_param", 3, "string", False),
                ("double_param", 4, "double", False),
                ("uint64_param", 5, "uint64", False),
            ],
            oneof="parameter_choice",
        ),
        _message(
            "InferTensorContents",
            [
                ("bool_contents", 1, "bool", True),
                ("int_contents", 2, "int32", True),
                ("int64_contents", 3, "int64", True),
                ("uint_contents", 4, "uint32", True),
                ("uint64_contents", 5, "uint64", True),
                ("fp32_contents", 6, "float", True),
                ("fp64_contents", 7, "double", True),
                ("bytes_contents", 8, "bytes", True),
            ],
        ),
    ]
    file = descriptor_pb2.FileDescriptorProto(
        name="deepserve/grpc/grpc_predict_v2.proto",
        package=PACKAGE,
        syntax="proto3",
    )
    file.message_type.extend(messages)
    service = file.service.add(name="GRPCInferenceService")
    for method in METHODS:
        service.method.add(
            name=method,
            input_type=f".{PACKAGE}.{method}Request",
            output_type=f".{PACKAGE}.{method}Response",
        )
    return file


#: The service's methods, in the specification's order; each takes
#: ``<method>Request`` and answers ``<method>Response``.
METHODS = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
)

#: The protocol's file, as ``protoc`` would describe it.
FILE = _file()
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(FILE)


def _class(name: str) -> Any:
    return message_factory.GetMessageClass(
        _POOL.FindMessageTypeByName(f"{PACKAGE}.{name}")
    )


ServerLiveRequest = _class("ServerLiveRequest")
ServerLiveResponse = _class("ServerLiveResponse")
ServerReadyRequest = _class("ServerReadyRequest")
ServerReadyResponse = _class("ServerReadyResponse")
ModelReadyRequest = _class("ModelReadyRequest")
ModelReadyResponse = _class("ModelReadyResponse")
ServerMetadataRequest = _class("ServerMetadataRequest")
ServerMetadataResponse = _class("ServerMetadataResponse")
ModelMetadataRequest = _class("ModelMetadataRequest")
ModelMetadataResponse = _class("ModelMetadataResponse")
ModelInferRequest = _class("ModelInferRequest")
ModelInferResponse = _class("ModelInferResponse")
InferParameter = _class("InferParameter")
InferTensorContents = _class("InferTensorContents")

#: Method -> (request class, response class).
MESSAGES: dict[str, tuple[Any, Any]] = {
    method: (_class(f"{method}Request"), _class(f"{method}Response"))
    for method in METHODS
}
