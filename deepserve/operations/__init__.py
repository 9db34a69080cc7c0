"""What every protocol does alike with a served model's operations.

Protocol-neutral (no aiohttp): the HTTP API (:mod:`deepserve.api`),
``deepserve call`` (:mod:`deepserve.shell`) and the other protocol layers
use these modules, each reading its own requests and writing its own
answers around them.

- :mod:`~deepserve.operations.arguments`: ``ArgSpec``, one operation's
  arguments, prepared once.
- :mod:`~deepserve.operations.plan`: ``ModelPlan``, a served model's
  operations prepared once (``prepare(model)``).
- :mod:`~deepserve.operations.negotiation`: the ``accept`` rules
  (``Offer``, ``Choice``) and ``negotiate``, their one entry point.
- :mod:`~deepserve.operations.encoding`: a prediction's result as the
  body of its media type (``encode``).
- :mod:`~deepserve.operations.uploads`: ``Uploads``, the files one call
  was handed.
- :mod:`~deepserve.operations.views`: metadata, trainings and their
  output as clients see them.
"""
