"""The plain reference LeaPRR's model is measured against: its matrix multiplies, and nothing else.

For a batch of ``n_lists`` candidate lists of ``n_nodes`` nodes, a direction network does the
pillar embedding (``2L -> D``) and, per block, the qkv projection, the two attention products per
head, the output projection and the two MLP layers. :func:`matmul_chain` runs exactly those
products on random tensors of the same shapes (no norms, softmax, residuals, biases, adjacency or
Python modules), so ``model time / reference time`` is the overhead of everything around the
arithmetic the model cannot avoid.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch

from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.utils.device import autocast


def _weights(cfg: LeaPRRConfig, generator: torch.Generator, *, grad: bool) -> dict[str, list[torch.Tensor]]:
    d, hidden = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)

    def w(rows: int, cols: int) -> torch.Tensor:
        return (torch.randn(rows, cols, generator=generator) / rows**0.5).requires_grad_(grad)

    return {
        "embed": [w(2 * cfg.n_pillars, d)],
        "blocks": [[w(d, 3 * d), w(d, d), w(d, hidden), w(hidden, d)] for _ in range(cfg.depth)],
    }


def matmul_chain(x: torch.Tensor, weights: dict, cfg: LeaPRRConfig) -> torch.Tensor:
    """The model's matrix multiplies on features ``x`` of shape (n_lists, n_nodes, 2L)."""
    q, n, _ = x.shape
    d, heads = cfg.embed_dim, cfg.num_heads
    h = x @ weights["embed"][0]
    for qkv_w, proj_w, fc1_w, fc2_w in weights["blocks"]:
        qkv = (h @ qkv_w).reshape(q, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attn = qkv[0] @ qkv[1].transpose(-2, -1)
        h = (attn @ qkv[2]).transpose(1, 2).reshape(q, n, d) @ proj_w
        h = (h @ fc1_w) @ fc2_w
    return h


def inference_seconds(batches: Iterable[tuple[int, int]], cfg: LeaPRRConfig, *, seed: int = 0,
                      precision: str = "fp32") -> float:
    """Wall seconds of the matrix multiplies of forward passes over ``(n_lists, n_nodes)`` batches
    (``precision="bf16"``: under CPU bf16 autocast, as the model runs then)."""
    gen = torch.Generator().manual_seed(seed)
    weights = _weights(cfg, gen, grad=False)
    inputs: dict[tuple[int, int], torch.Tensor] = {}
    total = 0.0
    with torch.inference_mode(), autocast(torch.device("cpu"), precision):
        for shape in batches:
            if shape not in inputs:
                inputs[shape] = torch.randn(*shape, 2 * cfg.n_pillars, generator=gen)
            start = time.perf_counter()
            matmul_chain(inputs[shape], weights, cfg)
            total += time.perf_counter() - start
    return total


def training_seconds(steps: Iterable[list[tuple[int, int]]], cfg: LeaPRRConfig, *, seed: int = 0,
                     precision: str = "fp32") -> float:
    """Wall seconds of forward + backward of the matrix multiplies of every training step.

    ``steps``: for each step, the ``(n_lists, n_nodes)`` shapes of its forward passes (both
    directions, the structure-alignment lists included); one backward through all of them.
    ``precision="bf16"``: the forward passes under CPU bf16 autocast, as training runs then.
    """
    gen = torch.Generator().manual_seed(seed)
    weights = _weights(cfg, gen, grad=True)
    params = [w for w in weights["embed"]] + [w for block in weights["blocks"] for w in block]
    inputs: dict[tuple[int, int], torch.Tensor] = {}
    total = 0.0
    for shapes in steps:
        for shape in shapes:
            if shape not in inputs:
                inputs[shape] = torch.randn(*shape, 2 * cfg.n_pillars, generator=gen)
        start = time.perf_counter()
        with autocast(torch.device("cpu"), precision):
            loss = sum(matmul_chain(inputs[s], weights, cfg).float().sum() for s in shapes)
        loss.backward()
        total += time.perf_counter() - start
        for p in params:
            p.grad = None
    return total
