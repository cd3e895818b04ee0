import json

import pytest

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import InvalidParameterError


def test_defaults_are_the_papers():
    c = LeaPRRConfig().validate()
    assert (c.n_pillars, c.list_len_i2t, c.list_len_t2i) == (64, 32, 8)
    assert (c.embed_dim, c.depth, c.num_heads) == (768, 2, 24)
    assert (c.epochs, c.batch_size, c.lr, c.momentum) == (30, 512, 0.02, 0.9)
    assert (c.temperature, c.margin, c.graph_neighbors, c.graph_coef) == (2.0, 0.2, 10, 0.8)
    assert c.reference_thresholds is False


def test_json_round_trip_is_exact():
    c = LeaPRRConfig(epochs=3, normalize="nnn", normalize_params={"k": 8})
    again = LeaPRRConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"epochs": 0}, "'epochs'"),
        ({"anchor": "middle"}, "'anchor'"),
        ({"lr": -1.0}, "'lr'"),
        ({"embed_dim": 30, "num_heads": 4}, "divisible"),
        ({"list_len_t2i": 1}, "'list_len_t2i'"),
        ({"device": 3}, "'device'"),
    ],
)
def test_invalid_values_name_the_field(changes, fragment):
    with pytest.raises(InvalidParameterError, match=fragment):
        LeaPRRConfig(**changes).validate()


def test_unknown_keys_are_rejected_by_name():
    with pytest.raises(InvalidParameterError, match="'epoch'"):
        LeaPRRConfig.from_dict({"epoch": 3})
