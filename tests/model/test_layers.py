import pytest
import torch

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.model import (
    AdjacencyAveragedAttention,
    GraphRerankNetwork,
    GraphTransformerBlock,
    MutualRerankNetwork,
    PillarEmbedding,
    SparseAdjacencyAttention,
)


def _adjacency(q, n, *, density=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    keep = (torch.rand(q, n, n, generator=g) < density) | torch.eye(n, dtype=torch.bool)
    a = torch.rand(q, n, n, generator=g) * keep
    return a / a.sum(-1, keepdim=True)


def _dense_oracle(attn, x, adjacency, *, masked):
    """Naive per-query, per-head loop of the attention formula."""
    q_, n, d = x.shape
    h, dh = attn.num_heads, attn.head_dim
    out = torch.zeros_like(x)
    for b in range(q_):
        qkv = attn.qkv(x[b]).reshape(n, 3, h, dh)
        heads = []
        for hh in range(h):
            qh, kh, vh = qkv[:, 0, hh], qkv[:, 1, hh], qkv[:, 2, hh]
            logits = qh @ kh.T / dh**0.5
            if masked:
                logits = logits.masked_fill(adjacency[b] == 0, float("-inf"))
            p = 0.5 * (torch.softmax(logits, -1) + adjacency[b])
            heads.append(p @ vh)
        out[b] = attn.proj(torch.cat(heads, -1))
    return out


def test_dense_attention_matches_loop_oracle():
    torch.manual_seed(0)
    attn = AdjacencyAveragedAttention(16, 4)
    x, a = torch.randn(3, 6, 16), _adjacency(3, 6)
    assert torch.allclose(attn(x, a), _dense_oracle(attn, x, a, masked=False), atol=1e-5)


def test_sparse_attention_agrees_with_masked_dense_oracle():
    torch.manual_seed(0)
    sparse = SparseAdjacencyAttention(16, 4)
    x, a = torch.randn(3, 6, 16), _adjacency(3, 6, density=0.4)
    assert torch.allclose(sparse(x, a), _dense_oracle(sparse, x, a, masked=True), atol=1e-5)


def test_sparse_equals_dense_when_graph_is_complete():
    torch.manual_seed(0)
    dense = AdjacencyAveragedAttention(16, 4)
    sparse = SparseAdjacencyAttention(16, 4)
    sparse.load_state_dict(dense.state_dict())
    x, a = torch.randn(2, 5, 16), _adjacency(2, 5, density=1.1)
    assert torch.allclose(sparse(x, a), dense(x, a), atol=1e-5)


def test_pillar_embedding_normalises_each_half_separately():
    emb = PillarEmbedding(4, 8)
    x = torch.randn(2, 3, 8)
    shifted = x.clone()
    shifted[..., 4:] = shifted[..., 4:] * 3.0 + 7.0  # LayerNorm of the second half removes this
    assert torch.allclose(emb(x), emb(shifted), atol=1e-4)
    assert "anchor='both'" in repr(emb)
    single = PillarEmbedding(4, 8, anchor="inter")
    assert single.proj.in_features == 4 and single.norm_first is None
    with pytest.raises(ValueError, match="2 \\* n_pillars"):
        emb(torch.randn(2, 3, 6))


def test_invalid_options_raise_naming_the_class():
    with pytest.raises(ValueError, match="AdjacencyAveragedAttention"):
        AdjacencyAveragedAttention(10, 3)
    with pytest.raises(ValueError, match="GraphTransformerBlock"):
        GraphTransformerBlock(8, 2, attention="flash")


def test_network_scores_shape_and_self_score():
    net = GraphRerankNetwork(4, embed_dim=16, depth=2, num_heads=4)
    x, a = torch.randn(5, 6, 8), _adjacency(5, 6)
    s = net(x, a)
    assert s.shape == (5, 6)
    assert torch.allclose(s[:, 0], torch.ones(5), atol=1e-5)
    assert (s.abs() <= 1 + 1e-5).all()
    assert "depth=2" in repr(net)


def test_init_is_seeded_and_follows_the_spec():
    cfg = LeaPRRConfig(n_pillars=8, embed_dim=32, num_heads=4)
    a = MutualRerankNetwork.from_config(cfg, generator=torch.Generator().manual_seed(3))
    b = MutualRerankNetwork.from_config(cfg, generator=torch.Generator().manual_seed(3))
    c = MutualRerankNetwork.from_config(cfg, generator=torch.Generator().manual_seed(4))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.i2t.embed.proj.weight, c.i2t.embed.proj.weight)
    assert not torch.equal(a.i2t.embed.proj.weight, a.t2i.embed.proj.weight)
    w = a.i2t.blocks[0].attn.qkv.weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.003 and float(w.abs().max()) <= 2.0
    assert torch.count_nonzero(a.i2t.blocks[0].mlp.fc1.bias) == 0
    assert torch.equal(a.i2t.blocks[0].norm1.weight, torch.ones(32))


def test_paper_size_parameter_count():
    net = MutualRerankNetwork.from_config(LeaPRRConfig())
    n = sum(p.numel() for p in net.parameters())
    # 28.75 M in the reference includes two unused Linear(768 -> 128) feature_align heads.
    assert n == 28_550_144
    assert round((n + 2 * (768 * 128 + 128)) / 1e6, 2) == 28.75  # the spec's measured count


def test_scores_are_permutation_equivariant_over_candidates():
    torch.manual_seed(1)
    net = GraphRerankNetwork(4, embed_dim=16, depth=2, num_heads=4).eval()
    x, a = torch.randn(2, 6, 8), _adjacency(2, 6)
    perm = torch.tensor([0, 3, 1, 5, 2, 4])
    s = net(x, a)
    s_perm = net(x[:, perm], a[:, perm][:, :, perm])
    assert torch.allclose(s[:, perm], s_perm, atol=1e-5)


def test_sparse_network_trains_and_transfers_weights():
    torch.manual_seed(0)
    dense = GraphRerankNetwork(4, embed_dim=16, depth=2, num_heads=4)
    sparse = GraphRerankNetwork(4, embed_dim=16, depth=2, num_heads=4, attention="sparse")
    sparse.load_state_dict(dense.state_dict())  # same parameters, different operator
    x, a = torch.randn(3, 6, 8), _adjacency(3, 6, density=0.3)
    s = sparse(x, a)
    assert s.shape == (3, 6) and torch.allclose(s[:, 0], torch.ones(3), atol=1e-5)
    s[:, 1:].sum().backward()
    assert sparse.blocks[0].attn.qkv.weight.grad is not None
    assert not torch.allclose(s, dense(x, a))


@pytest.mark.parametrize("attention", ["dense", "sparse"])
def test_softmax_layernorm_and_normalisation_run_in_fp32_under_cpu_autocast(attention, monkeypatch):
    """CUDA's autocast keeps softmax, LayerNorm and L2 normalisation in float32; CPU's would run them
    in bf16 after a bf16 matmul. The network keeps them in float32 on both, and fp32 is untouched."""
    import pillar_rerank.model.sparse_attention as sparse

    net = GraphRerankNetwork(8, embed_dim=16, depth=1, num_heads=2, attention=attention)
    x, adjacency = torch.randn(3, 5, 16), _adjacency(3, 5)
    seen = []
    net.blocks[0].norm2.register_forward_pre_hook(lambda module, args: seen.append(("norm", args[0].dtype)))
    if attention == "dense":
        monkeypatch.setattr(torch, "softmax", lambda t, *a, _f=torch.softmax, **k: seen.append(
            ("softmax", t.dtype)) or _f(t, *a, **k))
    else:
        monkeypatch.setattr(sparse, "segment_softmax", lambda t, *a, _f=sparse.segment_softmax: seen.append(
            ("softmax", t.dtype)) or _f(t, *a))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = net.node_embeddings(x, adjacency)
    assert sorted(seen) == [("norm", torch.float32), ("softmax", torch.float32)] and z.dtype == torch.float32
    assert torch.allclose(z.norm(dim=-1), torch.ones(3, 5), atol=1e-5)
    exact = net.node_embeddings(x, adjacency)
    assert exact.dtype == torch.float32 and 0 < (z - exact).abs().max() < 0.1
