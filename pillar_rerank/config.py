"""LeaPRR configuration: one typed, frozen dataclass saved verbatim with every model.

Defaults are the paper's (Qu et al., SIGIR 2023; LgQu/LeaPRR ``main.py`` at 50758d6). See
``../shared/spec/leaprr.md`` for provenance. ``config.to_dict()`` is the JSON stored in a model
directory, and :meth:`LeaPRRConfig.from_dict` restores (and fully validates) it.

The fields fall into five small frozen groups, each read whole by the code that needs it:
:class:`ListsConfig` (``config.lists``: the list builder, the cache key), :class:`ModelConfig`
(``config.model``: the network), :class:`LossConfig` (``config.loss``: the losses),
:class:`TrainingConfig` (``config.training``: the trainer) and :class:`RuntimeConfig`
(``config.runtime``: device and precision). The group classes declare the membership; the
defaults and constraints are declared once, on :class:`LeaPRRConfig`, which keeps its flat
keyword constructor (``LeaPRRConfig(epochs=2)``) and its flat saved form. ``from_dict`` also
accepts the grouped form ``{"lists": {...}, "model": {...}, ...}``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pillar_rerank._validation import Interval, Options, validate_params
from pillar_rerank.exceptions import InvalidParameterError

#: Largest sizes accepted (far above any useful setting; they stop a corrupt or hostile
#: config.json from allocating unbounded memory before anything else fails).
MAX_SIZE = {"n_pillars": 4096, "list_len": 65536, "graph_neighbors": 4096, "embed_dim": 16384,
            "depth": 64, "num_heads": 1024, "mlp_ratio": 64.0, "epochs": 100_000, "batch_size": 1 << 20,
            "intra_rank": 65536}


@dataclass(frozen=True)
class ListsConfig:
    """What the per-query lists are built from and how (read by the builder and the cache key)."""

    n_pillars: int
    list_len_i2t: int
    list_len_t2i: int
    graph_neighbors: int
    graph_coef: float
    reference_thresholds: bool
    intra_source: str
    intra_rank: int | None
    neighbor_index: str
    neighbor_index_params: dict
    normalize: str | None
    normalize_params: dict


@dataclass(frozen=True)
class ModelConfig:
    """Size and variant of the two direction networks (``n_pillars`` comes from the lists)."""

    anchor: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    qkv_bias: bool
    attention: str
    reference_fp16: bool
    score_fusion: str


@dataclass(frozen=True)
class LossConfig:
    """Weights and temperatures of the LeaPRR loss terms."""

    temperature: float
    margin: float
    triplet_weight: float
    hinge_weight: float
    kl_weight: float
    kl_temperature: float


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation schedule and seed."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    eval_every: int
    seed: int


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and in which precision the networks run (no effect on fp32 CPU results)."""

    device: str | None
    precision: str


#: Group name -> group class; every LeaPRRConfig field belongs to exactly one group.
GROUPS: dict[str, type] = {"lists": ListsConfig, "model": ModelConfig, "loss": LossConfig,
                           "training": TrainingConfig, "runtime": RuntimeConfig}


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
    reference_fp16 : bool, default=False
        Parity switch: round what the reference holds in float16 through float16, where it does:
        the list features and adjacency fed to the network (its ``.half()`` inputs), and the score
        matrices the re-ranked cosines are written into and averaged in (its float16 similarity
        file, ``(S_i2t + S_t2i.T) / 2`` in float16). With it, an imported reference checkpoint
        gives the reference's own score matrix (recalls then differ only where its unstable
        argsort breaks float16 ties differently). Off by default: float32 is more precise.
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
        Mixed precision of the model's forward passes: "auto" re-ranks under bf16 autocast on a
        CUDA device that supports it and on CPUs with native bf16 (AVX512-BF16, AMX or Arm BF16;
        :func:`pillar_rerank.utils.device.cpu_has_native_bf16`), fp32 elsewhere, and always
        trains in fp32 (bf16 training cost 20 RSUM on COCO 5K, re-ranking in bf16 nothing:
        accuracy/leaprr_precision); "bf16" forces autocast for both (emulated, and slow, on
        other CPUs); "fp32" turns it off. Parameters, optimiser state and the returned scores
        stay fp32.
    normalize : str or None, default=None
        Name of a training-free normaliser applied to the scores before LeaPRR (composition).
    normalize_params : dict, default={}
        Its parameters.
    score_fusion : {"overwrite", "zscore"}, default="overwrite"
        How re-scored candidates enter the output (:mod:`pillar_rerank.fusion`): "zscore" mixes
        the list-standardised input and network scores with per-direction weights chosen on the
        dev side (weight 1 = the input ranking, so dev RSUM never drops below it) and keeps the
        input's values; "overwrite" (the paper's) writes the network's cosines over the
        entries, as the reference does.
    """

    n_pillars: int = 64
    list_len_i2t: int = 32
    list_len_t2i: int = 8
    anchor: str = "both"
    graph_neighbors: int = 10
    graph_coef: float = 0.8
    reference_thresholds: bool = False
    reference_fp16: bool = False
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
    score_fusion: str = "overwrite"

    _constraints = {
        "n_pillars": Interval(int, 1, MAX_SIZE["n_pillars"]),
        "list_len_i2t": Interval(int, 2, MAX_SIZE["list_len"]),
        "list_len_t2i": Interval(int, 2, MAX_SIZE["list_len"]),
        "anchor": Options(frozenset({"both", "intra", "inter"})),
        "graph_neighbors": Interval(int, 1, MAX_SIZE["graph_neighbors"]), "graph_coef": Interval(float, 0.0),
        "reference_thresholds": bool, "reference_fp16": bool,
        "intra_source": Options(frozenset({"auto", "embeddings", "given", "second_order"})),
        "intra_rank": [None, Interval(int, 1, MAX_SIZE["intra_rank"])],
        "neighbor_index": Options(frozenset({"flat", "ivf", "hnsw"})), "neighbor_index_params": dict,
        "embed_dim": Interval(int, 1, MAX_SIZE["embed_dim"]), "depth": Interval(int, 1, MAX_SIZE["depth"]),
        "num_heads": Interval(int, 1, MAX_SIZE["num_heads"]),
        "mlp_ratio": Interval(float, 0.0, MAX_SIZE["mlp_ratio"], closed="right"), "qkv_bias": bool,
        "attention": Options(frozenset({"dense", "sparse"})),
        "temperature": Interval(float, 0.0, closed="neither"), "margin": Interval(float, 0.0),
        "triplet_weight": Interval(float, 0.0), "hinge_weight": Interval(float, 0.0),
        "kl_weight": Interval(float, 0.0), "kl_temperature": Interval(float, 0.0, closed="neither"),
        "epochs": Interval(int, 1, MAX_SIZE["epochs"]),
        "batch_size": Interval(int, 1, MAX_SIZE["batch_size"]),
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
        """The flat field -> value dict (the form saved in model directories)."""
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ groups
    def _group(self, name: str):
        cls = GROUPS[name]
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    @property
    def lists(self) -> ListsConfig:
        return self._group("lists")

    @property
    def model(self) -> ModelConfig:
        return self._group("model")

    @property
    def loss(self) -> LossConfig:
        return self._group("loss")

    @property
    def training(self) -> TrainingConfig:
        return self._group("training")

    @property
    def runtime(self) -> RuntimeConfig:
        return self._group("runtime")

    def to_groups(self) -> dict[str, dict[str, Any]]:
        """``{"lists": {...}, "model": {...}, ...}``: the grouped form ``from_dict`` also reads."""
        return {name: dataclasses.asdict(self._group(name)) for name in GROUPS}

    @classmethod
    def from_dict(cls, values: Any) -> LeaPRRConfig:
        """Build from a flat dict (the saved form) or a grouped one, validating every field.

        Raises InvalidParameterError naming the problem: not a dict, unknown keys (or groups),
        a field given twice, or any field of the wrong type or out of range (sizes have upper
        bounds, :data:`MAX_SIZE`), so a damaged ``config.json`` is rejected before any
        allocation.
        """
        if not isinstance(values, dict):
            raise InvalidParameterError(
                f"LeaPRRConfig: expected a dict of fields; got {type(values).__name__}.")
        flat = {k: v for k, v in values.items() if k not in GROUPS}
        for group, members in values.items():
            if group not in GROUPS:
                continue
            if not isinstance(members, dict):
                raise InvalidParameterError(
                    f"LeaPRRConfig: group {group!r} must be a dict of fields; got {type(members).__name__}.")
            allowed = {f.name for f in dataclasses.fields(GROUPS[group])}
            wrong = sorted(set(members) - allowed, key=str)
            if wrong:
                raise InvalidParameterError(
                    f"LeaPRRConfig: {', '.join(map(repr, wrong))} not in group {group!r} "
                    f"(its fields: {', '.join(sorted(allowed))}).")
            twice = sorted(set(members) & set(flat))
            if twice:
                raise InvalidParameterError(f"LeaPRRConfig: {', '.join(map(repr, twice))} given twice.")
            flat.update(members)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(flat) - known, key=str)
        if unknown:
            raise InvalidParameterError(
                f"LeaPRRConfig: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"valid keys: {', '.join(sorted(known))} (or the groups {', '.join(GROUPS)})."
            )
        return cls(**flat).validate()

    def replace(self, **changes: Any) -> LeaPRRConfig:
        return dataclasses.replace(self, **changes).validate()


#: Named starting points (field overrides of the paper's defaults): ``"paper"`` is the paper's
#: configuration (hours per epoch on a CPU at Flickr30K size); ``"cpu"`` the reduced one the
#: README's Flickr30K benchmarks measure (about 60x the paper's training throughput on CPU), with
#: the text queries' list at 16 images instead of the paper's 8 (``accuracy/leaprr_f30k_curves``
#: and ``_seeds``: about +3 RSUM for LeaPRR alone for about a third more fit time).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"embed_dim": 64, "depth": 2, "num_heads": 4, "epochs": 8, "batch_size": 128, "lr": 0.6,
            "list_len_t2i": 16},
}


def preset(name: str, **changes: Any) -> LeaPRRConfig:
    """The config of preset ``name`` (:data:`PRESETS`) with ``changes`` applied, validated."""
    if name not in PRESETS:
        raise InvalidParameterError(f"preset: expected one of {', '.join(map(repr, PRESETS))}; got {name!r}.")
    return LeaPRRConfig.from_dict({**PRESETS[name], **changes})
