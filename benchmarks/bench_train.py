"""LeaPRR training throughput (training items per second) against its bare matrix multiplies.

On a synthetic set (:mod:`benchmarks.synthetic`, embeddings, 5 captions per image) the inputs are
built first (timed apart, not part of the loop), then the training loop of ``rerank fit`` runs
for ``epochs`` epochs without validation: list gathering, structure-alignment lists, both
networks' forward and backward passes, the losses and the SGD update. Every forward pass's shape
is recorded, and :func:`benchmarks.model_reference.training_seconds` then runs the forward and
backward of just the model's matrix multiplies on those shapes in the same process: the ratio
``loop / reference`` is what the loop costs beyond the arithmetic it cannot avoid. With
``precision="bf16"`` the loop trains under bf16 autocast and is also run in fp32 on the same lists
in the same process, and the bare matmuls are timed in bf16: the bf16 loop as a ratio to the fp32
loop and to its bare bf16 matmuls.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from benchmarks.model_reference import training_seconds
from benchmarks.synthetic import retrieval_set
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.lists.builder import ListBuilder
from pillar_rerank.lists.memory import MemoryLists
from pillar_rerank.model.network import GraphRerankNetwork
from pillar_rerank.training import Trainer

#: Named model configurations: the paper's, and the reduced one of the accuracy suite.
CONFIGS = {
    "paper": {},
    "small": {"embed_dim": 64, "depth": 2, "num_heads": 4, "batch_size": 128},
}


def run(
    *,
    config: str | dict[str, Any] = "paper",
    n_images: int = 300,
    captions_per_image: int = 5,
    dim: int = 256,
    epochs: int = 1,
    seed: int = 0,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Time ``epochs`` epochs of the training loop and the matching bare matmuls; return figures."""
    name = config if isinstance(config, str) else "custom"
    fields = CONFIGS[config] if isinstance(config, str) else dict(config)
    cfg = LeaPRRConfig.from_dict({**fields, "epochs": epochs, "eval_every": 10**9, "seed": seed,
                                  "device": "cpu", "intra_source": "embeddings", "precision": precision})
    data = retrieval_set(n_images, captions_per_image, dim, seed=seed)

    start = time.perf_counter()
    source = MemoryLists(ListBuilder.from_data(data, cfg), cfg.lists)
    inputs_s = time.perf_counter() - start

    shapes: list[tuple[int, int]] = []
    forward = GraphRerankNetwork.forward

    def recording(self, features, adjacency):
        if torch.is_grad_enabled():
            shapes.append((int(features.shape[0]), int(features.shape[1])))
        return forward(self, features, adjacency)

    def loop_seconds(run_cfg: LeaPRRConfig) -> float:
        trainer = Trainer(run_cfg, device=torch.device("cpu"), train=source, txt_to_img=data.txt_to_img,
                          validate=None, verbose=False, fingerprint={})
        start = time.perf_counter()
        trainer.run(checkpoint_every=10**9)
        return time.perf_counter() - start

    GraphRerankNetwork.forward = recording
    try:
        loop_s = loop_seconds(cfg)
    finally:
        GraphRerankNetwork.forward = forward
    per_step = 4  # i2t, t2i and the two structure-alignment passes
    steps = [shapes[i:i + per_step] for i in range(0, len(shapes), per_step)]
    reference_s = training_seconds(steps, cfg, seed=seed, precision=precision)
    items = data.n_texts * epochs
    nodes = sum(q * n for q, n in shapes)
    result = {
        "config_name": name,
        "config": {k: getattr(cfg, k) for k in ("embed_dim", "depth", "num_heads", "mlp_ratio", "n_pillars",
                                                "list_len_i2t", "list_len_t2i", "batch_size")},
        "shape": [data.n_images, data.n_texts],
        "epochs": epochs,
        "steps": len(steps),
        "nodes_per_step": round(nodes / max(1, len(steps)), 1),
        "seconds": {"inputs (not in the loop)": round(inputs_s, 3), "training loop": round(loop_s, 3),
                    "reference matmuls fwd+bwd": round(reference_s, 3)},
        "items_per_second": round(items / loop_s, 1),
        "reference_items_per_second": round(items / reference_s, 1),
        "ratio_loop_to_reference": round(loop_s / reference_s, 2),
        "precision": precision,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": list(os.getloadavg()),
    }
    if precision != "fp32":  # the same loop in fp32, same lists, same process
        fp32_s = loop_seconds(cfg.replace(precision="fp32"))
        result.update({"fp32_loop_seconds": round(fp32_s, 3),
                       "fp32_items_per_second": round(items / fp32_s, 1),
                       "ratio_loop_to_fp32_loop": round(loop_s / fp32_s, 3)})
    return result
