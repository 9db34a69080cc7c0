"""A served model's operations, prepared once: :class:`ModelPlan`."""

from __future__ import annotations

import dataclasses

import marshmallow

from deepserve.model import Model, TensorSpec
from deepserve.operations.arguments import ArgSpec
from deepserve.operations.negotiation import Offer


@dataclasses.dataclass(frozen=True)
class ModelPlan:
    """What every protocol needs to know of one served model's operations.

    :param predict: ``predict``'s arguments, its ``accept`` negotiated;
        ``None`` when the model does not predict.
    :param train: ``train``'s arguments; ``None`` when it does not train.
    :param offer: the media types ``predict`` answers with.
    :param response_schema: the schema a JSON prediction must match.
    """

    name: str
    predict: ArgSpec | None
    train: ArgSpec | None
    offer: Offer
    response_schema: type[marshmallow.Schema] | None
    #: The versions served under the name, the default first (none for an
    #: unversioned model).
    versions: tuple[str, ...] = ()
    #: The tensors the Open Inference Protocol takes and gives.
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


def prepare(model: Model) -> ModelPlan:
    """Prepare ``model``'s argument reading and negotiation, once.

    Calls the model's ``predict_args``, ``train_args`` and
    ``response_schema``: model code, which may raise.
    """
    predict = (
        ArgSpec.prepare(model.predict_args(), negotiate_accept=True)
        if model.supports("predict")
        else None
    )
    train = (
        ArgSpec.prepare(model.train_args(), negotiate_accept=False)
        if model.supports("train")
        else None
    )
    return ModelPlan(
        name=model.name,
        predict=predict,
        train=train,
        offer=Offer.from_accept_field(predict.accept if predict else None),
        response_schema=model.response_schema,
    )
