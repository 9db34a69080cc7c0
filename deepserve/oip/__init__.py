"""The Open Inference Protocol (KServe V2), protocol-neutral.

What the REST endpoints (:mod:`deepserve.api.oip`) and the gRPC service
(:mod:`deepserve.grpc`) share: tensors and their encodings
(:mod:`.tensors`), the request and response values (:mod:`.types`), and the
operations over the served models (:mod:`.service`). Nothing here imports
aiohttp or grpc.
"""
