"""A class model: labels a text by counting positive and negative words."""

import json
import os
import pathlib
import tempfile

from aiohttp import web
from marshmallow import Schema, fields, validate

#: Where train() saves the vocabulary and warm() loads it from.
DATA_DIR = pathlib.Path(
    os.environ.get("COUNTER_DATA_DIR", "~/.cache/counter")
).expanduser()
DEFAULT_VOCABULARY = {
    "good": "positive",
    "great": "positive",
    "bad": "negative",
    "awful": "negative",
}


class Label(Schema):
    label = fields.Str(required=True)
    probability = fields.Float(required=True)


class Response(Schema):
    status = fields.Str(required=True)
    predictions = fields.List(fields.Nested(Label), required=True)


class WordCounter:
    schema = Response

    def __init__(self):
        # Runs in the server process and in every worker: keep it cheap.
        self.vocabulary = {}

    def get_metadata(self):
        return {
            "name": "counter",
            "description": "Labels a text by counting sentiment words",
            "version": "1.0",
        }

    def warm(self):
        # Runs once in every worker, before the server reports ready.
        path = DATA_DIR / "vocabulary.json"
        if path.exists():
            self.vocabulary = json.loads(path.read_text("utf-8"))
        else:
            self.vocabulary = dict(DEFAULT_VOCABULARY)

    def get_predict_args(self):
        return {
            "text": fields.Str(
                load_default=None,
                allow_none=True,
                metadata={"description": "Text to label."},
            ),
            "document": fields.Raw(
                load_default=None,
                allow_none=True,
                metadata={
                    "type": "file",
                    "location": "form",
                    "description": "A UTF-8 text file to label.",
                },
            ),
            "top_k": fields.Int(
                load_default=2,
                validate=validate.Range(min=1),
                metadata={"description": "How many labels to return."},
            ),
            "accept": fields.Str(
                load_default="application/json",
                validate=validate.OneOf(["application/json", "text/csv"]),
                metadata={"description": "Media type of the response."},
            ),
        }

    def predict(self, text, document, top_k, accept):
        if document is not None:
            text = pathlib.Path(document.filename).read_text("utf-8")
        if not text:
            raise web.HTTPBadRequest(text="Send a text or a document")
        counts = {"positive": 0, "negative": 0}
        for word in text.lower().split():
            label = self.vocabulary.get(word.strip(".,;:!?"))
            if label in counts:
                counts[label] += 1
        total = sum(counts.values()) or 1
        labels = sorted(
            ({"label": k, "probability": v / total} for k, v in counts.items()),
            key=lambda item: -item["probability"],
        )[:top_k]
        if accept == "text/csv":
            rows = [f"{item['label']},{item['probability']}" for item in labels]
            return "label,probability\n" + "\n".join(rows) + "\n"
        return {"status": "OK", "predictions": labels}

    def get_train_args(self):
        return {
            "corpus": fields.Raw(
                required=True,
                metadata={
                    "type": "file",
                    "location": "form",
                    "description": "JSON object: word -> 'positive' or 'negative'.",
                },
            ),
            "replace": fields.Bool(
                load_default=False,
                metadata={"description": "Replace the vocabulary, not extend it."},
            ),
        }

    def train(self, corpus, replace):
        # A training runs in a fresh worker of its own, warmed like the others.
        words = json.loads(pathlib.Path(corpus.filename).read_text("utf-8"))
        vocabulary = {} if replace else dict(self.vocabulary)
        vocabulary.update(words)
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        # Write, then rename: a cancelled training never leaves half a file.
        fd, tmp = tempfile.mkstemp(dir=DATA_DIR)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(vocabulary, f)
        os.replace(tmp, DATA_DIR / "vocabulary.json")
        return {"words": len(vocabulary)}
