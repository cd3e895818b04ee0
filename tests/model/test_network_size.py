"""Model sizes are counted before anything is allocated, and absurd ones refused (issue 15, item 14)."""

import pytest

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.model.network import (
    MutualRerankNetwork,
    check_model_size,
    parameter_count,
    state_shapes,
)

SMALL = LeaPRRConfig(n_pillars=5, embed_dim=12, depth=2, num_heads=3)


@pytest.mark.parametrize(
    "changes",
    [{}, {"anchor": "intra"}, {"anchor": "inter", "depth": 3}, {"qkv_bias": False, "mlp_ratio": 2.5}],
)
def test_parameter_count_and_shapes_match_the_built_model(changes):
    cfg = SMALL.replace(**changes)
    net = MutualRerankNetwork.from_config(cfg)
    assert parameter_count(cfg) == sum(p.numel() for p in net.parameters())
    assert state_shapes(cfg) == {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_paper_model_size():
    assert parameter_count(LeaPRRConfig()) == 28_550_144  # spec: 28.75 M with the unused feature_align


def test_absurd_size_is_refused_before_allocating():
    cfg = LeaPRRConfig(embed_dim=10**9, num_heads=1)
    with pytest.raises(InvalidParameterError, match=r"embed_dim=1000000000.*GiB of float32.*--embed-dim"):
        MutualRerankNetwork.from_config(cfg)
    with pytest.raises(InvalidParameterError, match="GiB"):
        state_shapes(cfg)  # the meta-device build would overflow: refused first


def test_limit_is_the_machine_memory():
    need = 4 * parameter_count(SMALL)
    assert check_model_size(SMALL, memory_bytes=need) == need
    with pytest.raises(InvalidParameterError, match="more than this machine's"):
        check_model_size(SMALL, memory_bytes=need - 1)


def test_state_shapes_allocate_nothing():
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    shapes = state_shapes(LeaPRRConfig(embed_dim=4096, num_heads=32, depth=1))  # 1.6 GB if it were real
    assert shapes["i2t.blocks.0.attn.qkv.weight"] == (3 * 4096, 4096)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 1024
