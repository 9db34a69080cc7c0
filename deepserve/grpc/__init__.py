"""The Open Inference Protocol over gRPC (KServe V2's ``GRPCInferenceService``).

The transport only: :mod:`.proto` holds the protocol's messages, built at
run time; :mod:`.convert` turns them into the values of
:mod:`deepserve.oip.types` and back; :mod:`.server` is
:class:`~deepserve.grpc.server.GrpcServer`, which answers them by calling an
:class:`~deepserve.oip.types.Inference`.

``grpcio`` and ``protobuf`` are the optional extra ``deepserve[grpc]``:
this package imports neither, its modules do, so nothing outside it needs
them.
"""
