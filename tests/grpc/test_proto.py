"""The runtime-built messages are wire-compatible with Triton's own."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("grpc")
service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")

from google.protobuf import json_format  # noqa: E402

from deepserve.grpc import proto  # noqa: E402

#: Fields of the KServe specification that Triton's superset leaves out.
KSERVE_ONLY = {
    ("inference.ModelMetadataResponse", "properties"),
    ("inference.ModelMetadataResponse", "PropertiesEntry"),
}


def repeated(field: Any) -> bool:
    # A property from protobuf 5.29 on, which deprecates ``label``.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == field.LABEL_REPEATED)


def shape_of(descriptor: Any) -> dict[str, Any]:
    """A message type's fields (name -> number, type, repeated, message
    type, one-of), nested types included."""
    fields = {
        f.name: (
            f.number,
            f.type,
            repeated(f),
            f.message_type.full_name if f.message_type else None,
            f.containing_oneof.name if f.containing_oneof else None,
        )
        for f in descriptor.fields
        if (descriptor.full_name, f.name) not in KSERVE_ONLY
    }
    nested = {
        n.name: shape_of(n)
        for n in descriptor.nested_types
        if (descriptor.full_name, n.name) not in KSERVE_ONLY
    }
    return {"fields": fields, "nested": nested}


@pytest.mark.parametrize(
    "name",
    [
        "ServerLiveRequest",
        "ServerLiveResponse",
        "ServerReadyRequest",
        "ServerReadyResponse",
        "ModelReadyRequest",
        "ModelReadyResponse",
        "ServerMetadataRequest",
        "ServerMetadataResponse",
        "ModelMetadataRequest",
        "ModelMetadataResponse",
        "ModelInferRequest",
        "ModelInferResponse",
        "InferParameter",
        "InferTensorContents",
    ],
)
def test_every_message_has_tritons_fields(name: str) -> None:
    ours = getattr(proto, name).DESCRIPTOR
    theirs = getattr(service_pb2, name).DESCRIPTOR
    assert ours.full_name == theirs.full_name == f"inference.{name}"
    assert shape_of(ours) == shape_of(theirs)


def test_the_service_has_the_methods_of_the_specification() -> None:
    ours = proto.FILE.service[0]
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert f"inference.{ours.name}" == proto.SERVICE == theirs.full_name
    for method in ours.method:
        other = theirs.methods_by_name[method.name]
        assert method.input_type == f".{other.input_type.full_name}"
        assert method.output_type == f".{other.output_type.full_name}"
    assert [m.name for m in ours.method] == list(proto.METHODS)
    for method, (request, response) in proto.MESSAGES.items():
        assert request.DESCRIPTOR.name == f"{method}Request"
        assert response.DESCRIPTOR.name == f"{method}Response"


def fill_tensor(tensor: Any, name: str) -> None:
    tensor.name = name
    tensor.datatype = "FP32"
    tensor.shape.extend([2, -1, 3])
    fill_parameters(tensor.parameters)
    contents = tensor.contents
    contents.bool_contents.extend([True, False])
    contents.int_contents.extend([-(2**31), 7])
    contents.int64_contents.extend([-(2**63), 2**63 - 1])
    contents.uint_contents.extend([0, 2**32 - 1])
    contents.uint64_contents.extend([2**64 - 1])
    contents.fp32_contents.extend([1.5, -0.25])
    contents.fp64_contents.extend([1e300, -2.5])
    contents.bytes_contents.extend([b"", b"\x00\xff"])


def fill_parameters(parameters: Any) -> None:
    parameters["b"].bool_param = True
    parameters["i"].int64_param = -(2**40)
    parameters["s"].string_param = "text é"
    parameters["d"].double_param = 0.125
    parameters["u"].uint64_param = 2**64 - 1


def as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def round_trip(theirs: Any, ours_class: Any) -> None:
    ours = ours_class.FromString(theirs.SerializeToString())
    assert as_dict(ours) == as_dict(theirs)
    assert type(theirs).FromString(ours.SerializeToString()) == theirs


def test_an_infer_request_with_every_field_reads_the_same_both_ways() -> None:
    theirs = service_pb2.ModelInferRequest(
        model_name="m", model_version="3", id="req-1"
    )
    fill_parameters(theirs.parameters)
    fill_tensor(theirs.inputs.add(), "a")
    fill_tensor(theirs.inputs.add(), "b")
    out = theirs.outputs.add(name="y")
    fill_parameters(out.parameters)
    theirs.raw_input_contents.extend([b"\x01\x02", b"", b"\xff" * 9])
    ours = proto.ModelInferRequest.FromString(theirs.SerializeToString())
    assert ours.inputs[1].contents.uint64_contents == [2**64 - 1]
    assert ours.parameters["u"].WhichOneof("parameter_choice") == "uint64_param"
    assert ours.outputs[0].parameters["s"].string_param == "text é"
    assert list(ours.raw_input_contents) == [b"\x01\x02", b"", b"\xff" * 9]
    round_trip(theirs, proto.ModelInferRequest)


def test_an_infer_response_with_every_field_reads_the_same_both_ways() -> None:
    theirs = service_pb2.ModelInferResponse(model_name="m", model_version="1", id="r")
    fill_parameters(theirs.parameters)
    fill_tensor(theirs.outputs.add(), "y")
    theirs.raw_output_contents.append(b"\x00\x00\x80\x3f")
    round_trip(theirs, proto.ModelInferResponse)


def test_metadata_and_health_messages_read_the_same_both_ways() -> None:
    metadata = service_pb2.ModelMetadataResponse(
        name="m", versions=["2", "1"], platform="deepserve"
    )
    metadata.inputs.add(name="x", datatype="BYTES", shape=[-1, 4])
    metadata.outputs.add(name="y", datatype="INT64", shape=[-1])
    round_trip(metadata, proto.ModelMetadataResponse)
    round_trip(
        service_pb2.ServerMetadataResponse(
            name="deepserve", version="1.0", extensions=["a", "b"]
        ),
        proto.ServerMetadataResponse,
    )
    round_trip(
        service_pb2.ModelReadyRequest(name="m", version="2"), proto.ModelReadyRequest
    )
    round_trip(service_pb2.ModelReadyResponse(ready=True), proto.ModelReadyResponse)
    round_trip(service_pb2.ServerLiveResponse(live=True), proto.ServerLiveResponse)
    round_trip(service_pb2.ServerReadyResponse(ready=True), proto.ServerReadyResponse)
    round_trip(
        service_pb2.ModelMetadataRequest(name="m", version="2"),
        proto.ModelMetadataRequest,
    )


def test_the_kserve_properties_of_model_metadata_are_field_6() -> None:
    ours = proto.ModelMetadataResponse(name="m")
    ours.properties["framework"] = "sklearn"
    field = ours.DESCRIPTOR.fields_by_name["properties"]
    assert field.number == 6
    again = proto.ModelMetadataResponse.FromString(ours.SerializeToString())
    assert dict(again.properties) == {"framework": "sklearn"}
    # Triton's clients, which do not know the field, skip it.
    assert (
        service_pb2.ModelMetadataResponse.FromString(ours.SerializeToString()).name
        == "m"
    )
