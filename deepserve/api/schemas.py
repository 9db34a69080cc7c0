"""Schemas of deepserve's own responses, for the OpenAPI document."""

from __future__ import annotations

from marshmallow import Schema, fields


class Error(Schema):
    code = fields.Int(required=True, metadata={"description": "HTTP status code"})
    title = fields.Str(required=True, metadata={"description": "HTTP reason phrase"})
    message = fields.Str(required=True, metadata={"description": "What went wrong"})
    errors = fields.Dict(
        keys=fields.Str(),
        values=fields.Raw(),
        metadata={"description": "Invalid arguments: field name -> problems"},
    )
    model = fields.Str(metadata={"description": "The model involved"})
    error_type = fields.Str(metadata={"description": "Type of the model's exception"})
    detail = fields.Str(metadata={"description": "The model's own error message"})
    limit = fields.Int(
        metadata={"description": "The size limit exceeded, in bytes (413)"}
    )


class Link(Schema):
    rel = fields.Str(required=True)
    href = fields.Str(required=True)
    type = fields.Str()


class Version(Schema):
    version = fields.Str(required=True)
    id = fields.Str(required=True)
    links = fields.List(fields.Nested(Link))


class Versions(Schema):
    versions = fields.List(fields.Nested(Version), required=True)
    links = fields.List(fields.Nested(Link), required=True)


class ModelMeta(Schema):
    class Meta:
        unknown = "include"

    id = fields.Str(required=True, metadata={"description": "Model identifier"})
    name = fields.Str(required=True, metadata={"description": "Model name"})
    description = fields.Str(metadata={"description": "Model description"})
    license = fields.Str(metadata={"description": "Model license"})
    author = fields.Str(metadata={"description": "Model author"})
    version = fields.Str(metadata={"description": "Model version"})
    url = fields.Str(metadata={"description": "Model URL"})
    links = fields.List(fields.Nested(Link))


class ModelList(Schema):
    models = fields.List(fields.Nested(ModelMeta), required=True)


class Prediction(Schema):
    status = fields.Str(required=True, metadata={"description": "Always 'OK'"})
    predictions = fields.Raw(
        required=True, metadata={"description": "What the model's predict returned"}
    )


class TrainingResult(Schema):
    output = fields.Raw(metadata={"description": "What the model's train returned"})
    finish_date = fields.Str()
    duration = fields.Str()


class Training(Schema):
    uuid = fields.Str(required=True, metadata={"description": "Training identifier"})
    date = fields.Str(required=True, metadata={"description": "Start time"})
    status = fields.Str(
        required=True,
        metadata={
            "description": "Training status",
            "enum": ["running", "done", "error", "cancelled", "interrupted"],
        },
    )
    args = fields.Dict(metadata={"description": "Arguments; files by name"})
    message = fields.Str(
        metadata={"description": "Why it failed, was cancelled or interrupted"}
    )
    result = fields.Nested(TrainingResult)
    duration = fields.Str(metadata={"description": "How long it ran"})
    finish_date = fields.Str(metadata={"description": "When it ended"})


class LogLine(Schema):
    seq = fields.Int(
        required=True, metadata={"description": "Position; a cursor for 'since'"}
    )
    stream = fields.Str(
        required=True,
        metadata={
            "description": "Where it came from",
            "enum": ["stdout", "stderr", "log"],
        },
    )
    time = fields.Str(required=True, metadata={"description": "When (ISO 8601, UTC)"})
    level = fields.Str(
        allow_none=True,
        required=True,
        metadata={"description": "Log level of a 'log' entry; null otherwise"},
    )
    text = fields.Str(required=True, metadata={"description": "The line"})


class TrainingLogs(Schema):
    uuid = fields.Str(required=True, metadata={"description": "Training identifier"})
    status = fields.Str(required=True, metadata={"description": "Training status"})
    next = fields.Int(
        required=True,
        metadata={"description": "Pass as 'since' to get the lines after these"},
    )
    truncated = fields.Bool(
        required=True,
        metadata={"description": "Whether older lines were dropped (size bound)"},
    )
    dropped = fields.Int(
        required=True, metadata={"description": "How many lines were dropped"}
    )
    logs = fields.List(fields.Nested(LogLine), required=True)


#: The headers of error responses, as the OpenAPI document describes them.
RETRY_AFTER = {
    "description": "Seconds after which the request may succeed",
    "schema": {"type": "integer", "minimum": 0},
}


WWW_AUTHENTICATE = {
    "description": (
        'The scheme to use: Bearer realm="deepserve", with '
        'error="invalid_token" when the token sent is wrong'
    ),
    "required": True,
    "schema": {"type": "string"},
}
