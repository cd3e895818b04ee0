import math

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_train import run as train_speed
from benchmarks.model_reference import _weights, inference_seconds, matmul_chain, training_seconds
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.model.network import GraphRerankNetwork

CFG = LeaPRRConfig(n_pillars=8, embed_dim=24, depth=2, num_heads=3, mlp_ratio=2.0)


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_reference_does_exactly_the_models_matrix_multiplies():
    net = GraphRerankNetwork(CFG.n_pillars, embed_dim=CFG.embed_dim, depth=CFG.depth, num_heads=CFG.num_heads,
                             mlp_ratio=CFG.mlp_ratio)
    x = torch.randn(5, 7, 2 * CFG.n_pillars)
    adjacency = torch.rand(5, 7, 7)
    weights = _weights(CFG, torch.Generator().manual_seed(0), grad=False)
    model = _flops(lambda: net(x, adjacency))
    reference = _flops(lambda: matmul_chain(x, weights, CFG))
    assert model > 0 and reference == model
    assert matmul_chain(x, weights, CFG).shape == (5, 7, CFG.embed_dim)


def test_reference_timers_return_positive_seconds():
    assert inference_seconds([(4, 6), (4, 6), (2, 6)], CFG) > 0
    assert training_seconds([[(4, 6), (3, 4)], [(4, 6)]], CFG) > 0


def test_training_speed_counts_steps_and_items():
    cfg = {"n_pillars": 8, "list_len_i2t": 6, "list_len_t2i": 4, "graph_neighbors": 4, "embed_dim": 16,
           "depth": 1, "num_heads": 2, "batch_size": 32}
    out = train_speed(config=cfg, n_images=20, captions_per_image=5, dim=16, epochs=2)
    assert out["shape"] == [20, 100] and out["steps"] == 2 * math.ceil(100 / 32)
    # per step: i2t lists of the batch's distinct images and of the mapped lists, t2i lists twice
    assert 2 * 32 * 4 + 2 * 6 <= out["nodes_per_step"] <= 2 * 32 * 4 + 2 * 32 * 6
    assert out["items_per_second"] > 0 and out["ratio_loop_to_reference"] > 0
