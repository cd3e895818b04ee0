"""HeadConfig and TrainingConfig: frozen, validated, dict round trip, unknown names refused."""

from __future__ import annotations

import dataclasses

import pytest

from pillar_rerank import InvalidParameterError
from pillar_rerank.adapters import HeadConfig, TrainingConfig
from pillar_rerank.adapters.api import make_trainer


def test_frozen_and_round_trip():
    head = HeadConfig(kind="mlp", embed_dim=32, hidden_dim=64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.embed_dim = 8
    assert HeadConfig.from_dict(head.to_dict()) == head
    assert TrainingConfig().replace(lr=1e-3).lr == 1e-3


def test_unknown_fields_and_bad_values_raise():
    with pytest.raises(InvalidParameterError, match="unknown field"):
        HeadConfig.from_dict({"embed_dimension": 8})
    with pytest.raises(InvalidParameterError, match="unknown field"):
        TrainingConfig().replace(learning_rate=1.0)
    with pytest.raises(InvalidParameterError, match="'lr' parameter"):
        TrainingConfig(lr=-1.0).validate()
    with pytest.raises(InvalidParameterError, match="'kind' parameter"):
        HeadConfig(kind="conv").validate()


def test_inapplicable_head_fields_raise():
    HeadConfig(kind="mlp", hidden_dim=8, dropout=0.2).check_applicable("T")
    HeadConfig(kind="linear", text_kind="mlp", hidden_dim=8).check_applicable("T")
    with pytest.raises(InvalidParameterError, match="context_layers"):
        HeadConfig(kind="linear", context_layers=2).check_applicable("T")


@pytest.mark.parametrize(
    "loss,params,match",
    [
        ("selfalign", {"head": {"hidden_dim": 64}}, "hidden_dim"),
        ("selfalign", {"head": {"kind": "mlp"}}, "linear"),
        ("selfalign", {"loss_params": {"embed_dim": 8}}, "embed_dim"),
        ("infonce", {"head": {"n_out": 1}}, "n_out"),
        ("infonce", {"training": {"epoch": 3}}, "epoch"),
    ],
)
def test_make_trainer_drops_nothing(loss, params, match):
    """The previous api.make_trainer silently dropped seven head parameters for selfalign."""
    with pytest.raises(InvalidParameterError, match=match):
        make_trainer(loss, **params)


def test_make_trainer_keeps_trainer_defaults():
    trainer = make_trainer("selfalign", head={"embed_dim": 16}, training={"lr": 1e-3})
    assert trainer.head_config().embed_dim == 16
    assert trainer.training_config() == TrainingConfig(lr=1e-3, weight_decay=0.0)
