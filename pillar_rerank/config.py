"""LeaPRR configuration: one typed, frozen dataclass saved verbatim with every model.

Defaults are the paper's (Qu et al., SIGIR 2023; LgQu/LeaPRR ``main.py`` at 50758d6). See
``../shared/spec/leaprr.md`` for provenance. ``dataclasses.asdict(config)`` is the JSON stored
in a model directory, and ``LeaPRRConfig(**json)`` restores it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pillar_rerank._validation import Interval, Options, validate_params
from pillar_rerank.exceptions import InvalidParameterError


@dataclass(frozen=True)
class LeaPRRConfig:
    """Every LeaPRR hyper-parameter and input choice.

    Parameters
    ----------
    n_pillars : int, default=64
        L, pillars per modality (the item vector has 2L columns).
    list_len_i2t, list_len_t2i : int, default=32 / 8
        Rows of an image-query / text-query list **including the query row**, so 31 texts are
        re-ranked per image query and 7 images per text query (the reference's ``topk_i2t`` /
        ``topk_t2i`` semantics).
    anchor : {"both", "intra", "inter"}, default="both"
        Which pillar half feeds the network (ablation switch; "both" is the paper).
    graph_neighbors : int, default=10
        C, size of the top-C neighbour sets used by the overlap adjacency.
    graph_coef : float, default=0.8
        Adjacency entries <= coef / n_nodes are dropped.
    reference_thresholds : bool, default=False
        Parity switch: use the reference's fixed thresholds 0.8/32 (i2t) and 0.8/8 (t2i)
        whatever the list lengths are.
    intra_source : {"auto", "embeddings", "given", "second_order"}, default="auto"
        Where image-image / text-text similarities come from. "auto" takes user-supplied
        matrices, else embeddings, else the second-order estimate from the cross-modal matrix.
    intra_rank : int or None, default=128
        Rank of the second-order estimate (used when the intra source resolves to
        "second_order"; see ``pillar_rerank.neighbors.second_order_embeddings``). None is exact,
        at the cost of a scores-sized copy and O(n_images * n_texts * min(n_images, n_texts)) work.
    neighbor_index : {"flat", "ivf", "hnsw"}, default="flat"
        FAISS index of the neighbour searches from embeddings: exact ("flat") or approximate
        (IVF-Flat, HNSW-Flat) for very large galleries. Approximate neighbours change the lists,
        so the choice is part of the model's config (see ``benchmarks/bench_scale_inputs.py`` for
        measured recall against exact).
    neighbor_index_params : dict, default={}
        Parameters of the approximate index (ivf: ``nlist``, ``nprobe``, ``train_size``,
        ``seed``; hnsw: ``M``, ``ef_construction``, ``ef_search``); unset ones take the defaults of
        :func:`pillar_rerank.neighbors.topk_search`.
    embed_dim, depth, num_heads, mlp_ratio, qkv_bias : model size (paper: 768, 2, 24, 4, True).
    attention : {"dense", "sparse"}, default="dense"
        "dense" is the paper's A-averaged attention; "sparse" restricts attention to the graph's
        edges (torch-geometric message passing) for long candidate lists.
    temperature : float, default=2.0
        tau of the listwise contrastive loss.
    margin : float, default=0.2
        Local triplet margin (hardest positive).
    triplet_weight, hinge_weight, kl_weight : float, default=1.0
    kl_temperature : float, default=1.0
        Softmax temperature of the structure-alignment distributions.
    epochs, batch_size, lr, momentum, weight_decay : training (paper: 30, 512, 0.02, 0.9, 0).
    eval_every : int, default=200
        Validate on the dev side every this many iterations (and after every epoch).
    seed : int, default=0
    device : str or None, default=None
        None picks CUDA when available, else CPU.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        Mixed precision of the model's forward passes (training and re-ranking): "auto" is bf16
        autocast on a CUDA device that supports it and fp32 elsewhere; "bf16" forces autocast
        (also on CPU, where it is mainly for testing); "fp32" turns it off. Parameters, optimiser
        state and the returned scores stay fp32.
    normalize : str or None, default=None
        Name of a training-free normaliser applied to the scores before LeaPRR (composition).
    normalize_params : dict, default={}
        Its parameters.
    score_fusion : {"zscore", "overwrite"}, default="zscore"
        How re-scored candidates enter the output (:mod:`pillar_rerank.fusion`): "zscore" mixes
        the list-standardised input and network scores with per-direction weights chosen on the
        dev side (weight 1 = the input ranking, so dev RSUM never drops below it) and keeps the
        input's values; "overwrite" writes the network's cosines over the entries, as the
        reference does (paper parity).
    """

    n_pillars: int = 64
    list_len_i2t: int = 32
    list_len_t2i: int = 8
    anchor: str = "both"
    graph_neighbors: int = 10
    graph_coef: float = 0.8
    reference_thresholds: bool = False
    intra_source: str = "auto"
    intra_rank: int | None = 128
    neighbor_index: str = "flat"
    neighbor_index_params: dict = dataclasses.field(default_factory=dict)
    embed_dim: int = 768
    depth: int = 2
    num_heads: int = 24
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    attention: str = "dense"
    temperature: float = 2.0
    margin: float = 0.2
    triplet_weight: float = 1.0
    hinge_weight: float = 1.0
    kl_weight: float = 1.0
    kl_temperature: float = 1.0
    epochs: int = 30
    batch_size: int = 512
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    eval_every: int = 200
    seed: int = 0
    device: str | None = None
    precision: str = "auto"
    normalize: str | None = None
    normalize_params: dict = dataclasses.field(default_factory=dict)
    score_fusion: str = "zscore"

    _constraints = {
        "n_pillars": Interval(int, 1), "list_len_i2t": Interval(int, 2), "list_len_t2i": Interval(int, 2),
        "anchor": Options(frozenset({"both", "intra", "inter"})),
        "graph_neighbors": Interval(int, 1), "graph_coef": Interval(float, 0.0),
        "reference_thresholds": bool,
        "intra_source": Options(frozenset({"auto", "embeddings", "given", "second_order"})),
        "intra_rank": [None, Interval(int, 1)],
        "neighbor_index": Options(frozenset({"flat", "ivf", "hnsw"})), "neighbor_index_params": dict,
        "embed_dim": Interval(int, 1), "depth": Interval(int, 1), "num_heads": Interval(int, 1),
        "mlp_ratio": Interval(float, 0.0, closed="neither"), "qkv_bias": bool,
        "attention": Options(frozenset({"dense", "sparse"})),
        "temperature": Interval(float, 0.0, closed="neither"), "margin": Interval(float, 0.0),
        "triplet_weight": Interval(float, 0.0), "hinge_weight": Interval(float, 0.0),
        "kl_weight": Interval(float, 0.0), "kl_temperature": Interval(float, 0.0, closed="neither"),
        "epochs": Interval(int, 1), "batch_size": Interval(int, 1),
        "lr": Interval(float, 0.0, closed="neither"), "momentum": Interval(float, 0.0, 1.0),
        "weight_decay": Interval(float, 0.0), "eval_every": Interval(int, 1), "seed": Interval(int, 0),
        "device": [None, str], "precision": Options(frozenset({"auto", "fp32", "bf16"})),
        "normalize": [None, str], "normalize_params": dict,
        "score_fusion": Options(frozenset({"zscore", "overwrite"})),
    }

    def validate(self) -> LeaPRRConfig:
        """Check every field against its constraint table; returns self."""
        validate_params(self.to_dict(), self._constraints, owner="LeaPRRConfig")
        from pillar_rerank.neighbors._ann import check_index  # no faiss import

        check_index(self.neighbor_index, self.neighbor_index_params, owner="LeaPRRConfig")
        if self.embed_dim % self.num_heads:
            raise InvalidParameterError(
                f"LeaPRRConfig: embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}."
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LeaPRRConfig:
        """Build from a dict; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidParameterError(
                f"LeaPRRConfig: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"valid keys: {', '.join(sorted(known))}."
            )
        return cls(**values).validate()

    def replace(self, **changes: Any) -> LeaPRRConfig:
        return dataclasses.replace(self, **changes).validate()
