"""Clients of a running deepserve server.

- :class:`AsyncClient` (asyncio) and :class:`Client` (blocking): list the
  models, read metadata, predict with arguments and files, train and wait
  for trainings.
- :class:`DeployedModel` / :class:`AsyncDeployedModel`: one model as an
  object, ``DeployedModel(url, name).predict(data)``.

Importing this package starts nothing: threads and connections are made
by the clients.
"""

from deepserve.client.async_client import AsyncClient
from deepserve.client.deployed import AsyncDeployedModel, DeployedModel
from deepserve.client.errors import (
    ApiError,
    ArgumentError,
    ClientError,
    ConnectionFailed,
    RequestTimeout,
    TrainingFailed,
    WaitTimeout,
)
from deepserve.client.operations import Argument, Operation
from deepserve.client.results import FileResult, Training
from deepserve.client.sync_client import Client

__all__ = [
    "ApiError",
    "Argument",
    "ArgumentError",
    "AsyncClient",
    "AsyncDeployedModel",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "DeployedModel",
    "FileResult",
    "Operation",
    "RequestTimeout",
    "Training",
    "TrainingFailed",
    "WaitTimeout",
]
