"""A batching model: concurrent predictions reach predict_batch together."""

from aiohttp import web
from marshmallow import fields


class Scorer:
    # The model's own batching settings; the configuration may override them.
    batching = {"max_batch_size": 16, "max_latency_ms": 10}

    def warm(self):
        # Runs once in every worker: load the weights there.
        self.weights = {"good": 1.0, "great": 2.0, "bad": -1.0, "awful": -2.0}

    def get_predict_args(self):
        return {
            "text": fields.Str(
                required=True, metadata={"description": "Text to score."}
            ),
        }

    def predict(self, text):
        # Needed for the predict endpoint to exist; called only when
        # batching is turned off in the configuration.
        return self.predict_batch([{"text": text}])[0]

    def predict_batch(self, items):
        # items: one dict of parsed arguments per request, oldest first.
        # Return one result per item, in the same order.
        results = []
        for item in items:
            words = item["text"].lower().split()
            if not words:
                # Fails this request only; the others get their results.
                results.append(web.HTTPBadRequest(text="The text is empty"))
                continue
            score = sum(self.weights.get(w, 0.0) for w in words) / len(words)
            results.append({"score": score, "batch_size": len(items)})
        return results
