"""The benchmark registry: each suite is a list of :class:`Benchmark` entries.

An entry names its function as ``"module:function"`` so nothing is imported until it runs, and
lists the modules and shared-data files it needs; when one is missing the runner records the
benchmark as skipped with that reason instead of failing. Each *point* (and each seed) runs in
its own fresh process so the peak RSS reported is that run's alone.

Over ~400 lines: the registry, one declaration per benchmark.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Files of ../shared/data/caption_xenc that the COCO benchmarks read.
COCO_FILES = (
    "proxy_coco5k_test_img.npy",
    "proxy_coco1k_dev_img.npy",
    "coco5k_test_minilm.npy",
    "coco1k_dev_minilm.npy",
)
ECCV_FILES = ("eccv_caption_labels", "cxc", "coco5k_test_caption_ids.npy")


@dataclass(frozen=True)
class Benchmark:
    """One registered benchmark.

    Parameters
    ----------
    suite, name : str
        Its result goes to ``<results>/<suite>/<name>.json``.
    title : str
        Heading in tables and the report.
    target : str
        ``"module:function"``; called as ``function(**params, **point)`` and returning a dict of
        figures (JSON-serialisable).
    description : str
        One or two sentences for people: what is measured, on what.
    params : mapping
        Keyword arguments of every run.
    points : tuple of mappings
        Extra keyword arguments; each point runs in its own process.
    quick_params, quick_points : optional
        Replacements used with ``--quick`` (a reduced run; recorded in the result).
    seeds, quick_seeds : tuple of int, optional
        Each point runs once per seed, passed as ``seed=`` (``quick_seeds`` with ``--quick``).
    requires : tuple of str
        Modules that must be importable; otherwise the benchmark is skipped.
    data_files : tuple of str
        Paths under the data root that must exist; otherwise skipped. When set, the data root is
        passed as the keyword ``data_param``.
    summarize : str, optional
        ``"module:function"`` turning the list of runs into ``{"tables", "plots",
        "diagnostics", "notes"}``; by default a generic table of scalar figures.
    timeout_s : float
        Limit per run.
    """

    suite: str
    name: str
    title: str
    target: str
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    points: tuple[Mapping[str, Any], ...] = ({},)
    quick_params: Mapping[str, Any] | None = None
    quick_points: tuple[Mapping[str, Any], ...] | None = None
    seeds: tuple[int, ...] | None = None
    quick_seeds: tuple[int, ...] | None = None
    requires: tuple[str, ...] = ()
    data_files: tuple[str, ...] = ()
    data_param: str = "data_root"
    summarize: str | None = None
    timeout_s: float = 6 * 3600.0

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.name}"

    def runs(self, *, quick: bool = False) -> list[dict[str, Any]]:
        """The keyword arguments of every isolated run, in order."""
        params = dict(self.quick_params if quick and self.quick_params is not None else self.params)
        points = self.quick_points if quick and self.quick_points is not None else self.points
        out = []
        seeds = self.quick_seeds if quick and self.quick_seeds is not None else self.seeds
        for point in points:
            point = dict(point)
            # a point may narrow the seeds (e.g. one seed at the largest, costliest size)
            for seed in point.pop("seeds", None) or seeds or (None,):
                kw = {**params, **point}
                if seed is not None:
                    kw["seed"] = seed
                out.append(kw)
        return out


#: The F30K protocol's LeaPRR configuration: the reduced CPU one with the text queries' list at 16
#: images, as the ``cpu`` preset (accuracy/leaprr_f30k_curves: 8 -> 16 for about a third more fit time).
F30K_CONFIG: dict[str, Any] = {"list_len_t2i": 16}

#: What the two Flickr30K-protocol benchmarks share (target, data, summary, quick run).
F30K_PROTOCOL: dict[str, Any] = {
    "quick_params": {"config": {"epochs": 1, "embed_dim": 32, "num_heads": 2}, "methods": ["nnn", "dsl"]},
    "quick_points": ({"train_items": 1000},),
    "quick_seeds": (0,),
    "requires": ("benchmarks.leaprr_f30k", "pillar_rerank.datasets.f30k", "pillar_rerank.fusion"),
    "data_files": COCO_FILES + ("../f30k_xenc/proxy_f30k_dev_img.npy",),
    "data_param": "root",
    "summarize": "benchmarks.leaprr_f30k:summarize",
}


# Registry names the speed suite measures (a name this build lacks is skipped with a note).
BASELINE_NAMES = (
    "inverted_softmax",
    "qb_norm",
    "nnn",
    "csls",
    "dn",
    "sinkhorn",
    "dbsn",
    "dbnorm",
    "dsl",
    "mtfn_rr",
    "k_reciprocal",
)

# LeaPRR accuracy runs: overrides of the reduced CPU configuration of benchmarks.leaprr_accuracy
# (embed_dim 64, depth 2, 4 heads, batch 128, lr 0.6; the paper's is 768 / 24 heads / batch 512 /
# 30 epochs). Protocol b has 4x the training captions of a (800 iterations against 200); with 4
# epochs its dev RSUM was still rising (measured: LeaPRR alone +21.0 +- 2.5 RSUM over 3 seeds).
LEAPRR_ACCURACY_CONFIG = {"a": {"epochs": 8}, "b": {"epochs": 8}}

#: The paper's model and training recipe (LeaPRRConfig's defaults) over the reduced configuration.
PAPER_RECIPE = {"embed_dim": 768, "num_heads": 24, "batch_size": 512, "lr": 0.02, "epochs": 30,
                "eval_every": 200}

# Seeds, quick settings, requirements, data and summary shared by the LeaPRR accuracy benchmarks.
LEAPRR_ACCURACY_RUNS: dict[str, Any] = {
    "seeds": (0, 1, 2),
    "quick_params": {"config": {"epochs": 1, "embed_dim": 32, "num_heads": 2}},
    "quick_seeds": (0,),
    "requires": ("benchmarks.leaprr_accuracy", "pillar_rerank.reranker"),
    "data_files": COCO_FILES,
    "data_param": "root",
    "summarize": "benchmarks.summaries:leaprr_accuracy",
}

# Sizes of the scale suite: (n_images, n_texts), up to the Flickr30K training shape.
SCALE_SIZES = ((1000, 5000), (5000, 25_000), (14_500, 72_500), (29_000, 145_000))

SUITES: dict[str, list[Benchmark]] = {
    "smoke": [
        Benchmark(
            "smoke",
            "synthetic_accuracy",
            "Synthetic accuracy and diagnostics (smoke)",
            "benchmarks.smoke:accuracy",
            description="A tiny synthetic set with hubs: base scores and every shipped training-free "
            "method at its defaults; recall, rank changes and hubness. Checks the pipeline, "
            "not the methods (accuracy on synthetic data means nothing).",
            params={"n_images": 100, "captions_per_image": 4, "dim": 16},
            summarize="benchmarks.smoke:summarize_accuracy",
            timeout_s=300,
        ),
        Benchmark(
            "smoke",
            "synthetic_scale",
            "Input building under a memory budget at two tiny sizes (smoke)",
            "benchmarks.bench_scale_inputs:run",
            description="The scale suite's benchmark at toy sizes: one fresh process per size.",
            params={"sizes": [[200, 1000], [400, 2000]], "d": 32, "max_memory": "128MB", "out": None},
            requires=("benchmarks.bench_scale_inputs", "pillar_rerank.lists.build"),
            summarize="benchmarks.summaries:scale_memory_budget",
            timeout_s=300,
        ),
    ],
    "accuracy": [
        Benchmark(
            "accuracy",
            "baselines",
            "Training-free methods on the COCO caption proxy",
            "benchmarks.baselines_accuracy:run",
            description="Every shipped training-free method at its defaults and tuned on coco1k_dev, on "
            "COCO 5K and its 1K fold 0; banks from coco1k_dev; transductive methods apart.",
            params={"seed": 0},
            quick_params={"seed": 0, "methods": ["dn", "nnn", "dsl"]},
            requires=("benchmarks.baselines_accuracy", "pillar_rerank.baselines.tuning"),
            data_files=COCO_FILES,
            data_param="root",
            summarize="benchmarks.summaries:baselines_accuracy",
        ),
        Benchmark(
            "accuracy",
            "leaprr",
            "LeaPRR on the COCO caption proxy",
            "benchmarks.adapters:leaprr_accuracy",
            description="LeaPRR, and LeaPRR after a normaliser (NNN, parameters tuned on coco1k_dev), "
            "trained on the training side of each protocol (a: coco1k_dev -> COCO 5K; b: items "
            "1000-4999 -> fold 0), model selection on a dev split of the training side; one "
            "process per protocol, variant and seed; mean and spread over 3 seeds. Reduced CPU "
            "configuration: embed_dim 64, depth 2, 4 heads, batch 128, lr 0.6, 8 epochs; NNN "
            "parameters tuned per direction on coco1k_dev.",
            points=tuple(
                {"protocol": p, "config": LEAPRR_ACCURACY_CONFIG[p], **v}
                for p in ("a", "b")
                for v in ({}, {"normalize": "nnn", "normalize_params": "tuned"})
            ),
            quick_points=({"protocol": "b"},),
            **LEAPRR_ACCURACY_RUNS,
        ),
        Benchmark(
            "accuracy",
            "leaprr_transductive",
            "LeaPRR after a transductive normaliser (DSL) on the COCO caption proxy",
            "benchmarks.adapters:leaprr_accuracy",
            description="LeaPRR composed with DSL (parameters tuned per direction on coco1k_dev): DSL "
            "normalises each side with its own queries, so this is transductive and is compared with "
            "DSL alone, not with the inductive methods. Same protocols, configuration and seeds as "
            "the LeaPRR benchmark.",
            points=tuple(
                {"protocol": p, "config": LEAPRR_ACCURACY_CONFIG[p], "normalize": "dsl",
                 "normalize_params": "tuned"}
                for p in ("a", "b")
            ),
            quick_points=({"protocol": "b", "normalize": "dsl", "normalize_params": "tuned"},),
            **LEAPRR_ACCURACY_RUNS,
        ),
        Benchmark(
            "accuracy",
            "leaprr_precision",
            "LeaPRR in fp32 and bf16 on the COCO caption proxy",
            "benchmarks.precision:run",
            description="A reduced LeaPRR model trained in fp32 re-ranks in fp32 and bf16 (same weights), "
            "and (protocol a) one trained in bf16 re-ranks in bf16: RSUM, largest score difference and "
            "times per protocol. Times only mean something where bf16 is native (the result says whether it "
            "was emulated).",
            # bf16 training on protocol a only: emulated (no native bf16 here) it takes 9.9x the
            # fp32 fit, about 25 min at protocol b's 3,200 training items
            points=({"protocol": "a", "config": LEAPRR_ACCURACY_CONFIG["a"]},
                    {"protocol": "b", "config": LEAPRR_ACCURACY_CONFIG["b"], "train_bf16": False}),
            quick_points=({"protocol": "a", "config": {"epochs": 1, "embed_dim": 32, "num_heads": 2}},),
            requires=("benchmarks.precision", "pillar_rerank.reranker"),
            data_files=COCO_FILES,
            data_param="root",
        ),
        Benchmark(
            "accuracy",
            "leaprr_precision_gpu",
            "LeaPRR at the paper's size on a GPU: fp32 and bf16, Flickr30K protocol",
            "benchmarks.precision:run",
            description="The leaprr_f30k protocol at 4,000 training items (held-out F30K 1,000 and COCO 5K, "
            "dev-chosen score fusion), the paper's model size (embed_dim 768, 24 heads, depth 2): "
            "with the paper's recipe (batch 512, lr 0.02, 30 epochs) trained in fp32 and in bf16, "
            "re-ranked in both; then trained in fp32 with the reduced CPU recipe (batch 128, lr 0.6, "
            "8 epochs) at that width, seeds 0-2, for the width curve of accuracy/leaprr_f30k_curves, "
            "and once with the text queries' list 16 (the cpu preset's). Needs a CUDA GPU.",
            points=({"protocol": "f30k", "train_items": 4000, "config": PAPER_RECIPE, "require_cuda": True},
                    {"protocol": "f30k", "train_items": 4000, "require_cuda": True, "train_bf16": False,
                     "config": {"embed_dim": 768, "num_heads": 24}, "seeds": (0, 1, 2)},
                    {"protocol": "f30k", "train_items": 4000, "require_cuda": True, "train_bf16": False,
                     "config": {"embed_dim": 768, "num_heads": 24, "list_len_t2i": 16}}),
            seeds=(0,),
            timeout_s=3600.0,
            **{**F30K_PROTOCOL, "summarize": "benchmarks.precision:summarize_f30k",
               "requires": ("benchmarks.precision", *F30K_PROTOCOL["requires"]),
               "quick_params": {},
               "quick_points": ({"protocol": "f30k", "train_items": 1000, "train_bf16": False,
                                 "config": {"epochs": 1, "embed_dim": 32, "num_heads": 2}},)},
        ),
        Benchmark(
            "accuracy",
            "leaprr_f30k",
            "LeaPRR on the Flickr30K caption proxy (train at scale, F30K held-out and COCO 5K)",
            "benchmarks.leaprr_f30k:run",
            description="Training side: f30k_train (cache of ../shared/data/f30k_xenc/build_train.py) minus "
            "its last 1,000 items, which are the held-out test; model selection and fusion weights on "
            "f30k_dev; every training-free method tuned on the training side (banks from its first "
            "8,000 items); LeaPRR alone, after the best non-transductive normaliser by tuning RSUM and "
            "after DSL, with the score fusion and with the reference's overwrite, on the held-out items "
            "and COCO 5K. 28,000 training items, seeds 0, 1 and 2 for each; after a normaliser the "
            "training side is normalised streamed (pillar_rerank.score_transform), as 28,000 x 112,000 "
            "normalised matrices would need 37.6 GB. Then the data-size curve's other points, 1,000 and "
            "16,000 items, seed 0, LeaPRR alone (accuracy/leaprr_f30k_seeds: 4,000 items, seeds 0-2). "
            "Reduced CPU configuration (embed_dim 64, depth 2, 4 heads, batch 128, lr 0.6, 8 epochs, "
            "lists 32/16).",
            params={"config": F30K_CONFIG},
            # one variant per run (a stopped run keeps the finished ones); seeds and points were
            # added over time with --resume
            points=({"train_items": 28_000, "variants": ["alone"], "seeds": (0, 1, 2)},
                    {"train_items": 28_000, "variants": ["dsl"], "seeds": (0, 1, 2)},
                    {"train_items": 28_000, "variants": ["best"], "seeds": (0, 1, 2)},
                    {"train_items": 1000, "variants": ["alone"], "seeds": (0,)},
                    {"train_items": 16_000, "variants": ["alone"], "seeds": (0,)}),
            seeds=(0,),
            timeout_s=4 * 3600.0,
            **F30K_PROTOCOL,
        ),
        Benchmark(
            "accuracy",
            "leaprr_f30k_seeds",
            "LeaPRR on the Flickr30K caption proxy: seed spread at 4,000 training items",
            "benchmarks.leaprr_f30k:run",
            description="The leaprr_f30k protocol with the first 4,000 items of f30k_train as the "
            "training side, seeds 0, 1 and 2 (everything else as leaprr_f30k): how much of a "
            "difference between rows is seed noise. Reduced CPU configuration (embed_dim 64, depth 2, "
            "4 heads, batch 128, lr 0.6, 8 epochs, lists 32/16).",
            params={"config": F30K_CONFIG},
            points=({"train_items": 4000},),
            seeds=(0, 1, 2),
            **F30K_PROTOCOL,
            timeout_s=2 * 3600.0,
        ),
        Benchmark(
            "accuracy",
            "leaprr_f30k_curves",
            "LeaPRR on the Flickr30K caption proxy: what limits it (training items, width, list length)",
            "benchmarks.leaprr_f30k:run",
            description="The leaprr_f30k protocol, one point per change of the reduced CPU "
            "configuration (embed_dim 64, depth 2, 4 heads, batch 128, lr 0.6, 8 epochs, lists 32/8) "
            "at 4,000 training items: the configuration itself (LeaPRR after DSL also with seeds 1 "
            "and 2), the text queries' list length 16 and 32, and width 128 (the data-size points: "
            "accuracy/leaprr_f30k_seeds and accuracy/leaprr_f30k). LeaPRR alone and after DSL "
            "(width: alone); training-free methods: inverted softmax, NNN, DSL.",
            params={"variants": ["alone", "dsl"], "methods": ["inverted_softmax", "nnn", "dsl"]},
            # in order of what they tell (a stopped run keeps the finished points)
            points=({"train_items": 4000},
                    {"train_items": 4000, "config": {"list_len_t2i": 16}},
                    {"train_items": 4000, "variants": ["dsl"], "seeds": (1, 2)},
                    {"train_items": 4000, "config": {"list_len_t2i": 32}},
                    {"train_items": 4000, "config": {"embed_dim": 128}, "variants": ["alone"]}),
            seeds=(0,),
            timeout_s=2 * 3600.0,
            **{**F30K_PROTOCOL, "summarize": "benchmarks.leaprr_f30k:summarize_curves"},
        ),
        Benchmark(
            "accuracy",
            "coco5k_extended",
            "COCO 5K: ECCV Caption and CxC metrics, diagnostics",
            "benchmarks.coco_extended:run",
            description="Base and every training-free method (defaults and tuned) on COCO 5K with ECCV "
            "Caption mAP@R / R-Precision and CxC NDCG@10, plus recall curves, rank changes of "
            "the true match and hubness before/after.",
            params={"seed": 0},
            quick_params={"seed": 0, "methods": ["dn", "nnn", "dsl"], "tuned": False},
            requires=("pillar_rerank.metrics.evaluate", "pillar_rerank.baselines.tuning"),
            data_files=COCO_FILES + ECCV_FILES,
            summarize="benchmarks.coco_extended:summarize",
        ),
        Benchmark(
            "accuracy",
            "leaprr_fusion_coco_a",
            "Score fusion vs overwrite on COCO protocol a (reduced configuration, 1 epoch)",
            "benchmarks.leaprr_f30k:run",
            description="The leaprr_f30k comparison on COCO protocol a (training side coco1k_dev items "
            "0-799, dev 800-999, test COCO 5K): base, NNN tuned per direction, LeaPRR with the "
            "reference's overwrite and with the dev-chosen score fusion. Reduced configuration "
            "(embed_dim 64, depth 2, 4 heads, batch 128, lr 0.6) for 1 epoch, seed 0.",
            params={"sides": "coco_a", "config": {"epochs": 1}, "variants": ["alone"], "methods": ["nnn"]},
            quick_params={"sides": "coco_a", "config": {"epochs": 1, "embed_dim": 32, "num_heads": 2},
                          "variants": ["alone"], "methods": ["nnn"]},
            seeds=(0,),
            quick_seeds=(0,),
            requires=("benchmarks.leaprr_f30k", "pillar_rerank.fusion"),
            data_files=COCO_FILES,
            data_param="root",
            summarize="benchmarks.leaprr_f30k:summarize",
            timeout_s=3600.0,
        ),
    ],
    "speed": [
        Benchmark(
            "speed",
            "inputs",
            "LeaPRR input building at Flickr30K and COCO 5K shapes",
            "benchmarks.bench_inputs:run",
            description="Neighbour search, pillar vectors and graphs for every image and text query of a "
            "synthetic set, from a score matrix (second-order intra-modal scores) or from "
            "embeddings (FAISS); one process per shape and input form.",
            points=(
                {"mode": "scores", "n_images": 1000, "dim": 384},
                {"mode": "scores", "n_images": 5000, "dim": 384},
                {"mode": "embeddings", "n_images": 5000, "dim": 1024},
            ),
            quick_points=(
                {"mode": "scores", "n_images": 300, "dim": 64},
                {"mode": "embeddings", "n_images": 300, "dim": 64},
            ),
            requires=("benchmarks.bench_inputs", "pillar_rerank.lists.builder"),
            summarize="benchmarks.summaries:bench_inputs",
        ),
        Benchmark(
            "speed",
            "inputs_floor",
            "LeaPRR input building against its bare matrix products",
            "benchmarks.bench_scale_inputs:run",
            description="build_cache from embeddings (exact search, 4 GB budget) at the Flickr30K "
            "training side's shape 29,000 x 116,000 (d 384), then 5,000 x 25,000 and 14,500 x 72,500 "
            "(d 1024), then 29,000 x 145,000 (d 1024: Flickr30K train with five captions per image), "
            "each in a fresh process, then the bare matrix products of its searches (image x "
            "text once, text x text, image x image) timed in the same process: build time as a ratio "
            "to them.",
            params={"max_memory": "4GB", "out": None, "bare": True},
            # the shape users run first goes first (a stopped run keeps the finished points)
            points=({"sizes": [[29_000, 116_000]], "d": 384},
                    {"sizes": [[5000, 25_000], [14_500, 72_500]], "d": 1024},
                    {"sizes": [[29_000, 145_000]], "d": 1024}),
            quick_params={"max_memory": "512MB", "out": None, "bare": True},
            quick_points=({"sizes": [[500, 2500]], "d": 64},),
            requires=("benchmarks.bench_scale_inputs", "pillar_rerank.lists.build"),
            summarize="benchmarks.summaries:scale_memory_budget",
        ),
        Benchmark(
            "speed",
            "baselines",
            "Training-free methods: throughput vs a dense numpy reference",
            "benchmarks.speed_baselines:run",
            description="Each shipped training-free method, both directions, at Flickr30K (1000 x 5000) and "
            "COCO 5K (5000 x 25,000) shapes with a 5000 x 25,000 training-side bank; queries "
            "per second, fit/re-rank time, extra RSS, and the ratio to the same formula as "
            "dense numpy in the same process (with the largest output difference).",
            params={"bank_images": 5000, "bank_texts": 25_000, "dim": 256},
            points=tuple(
                {"method": m, "n_images": i, "n_texts": t}
                for i, t in ((1000, 5000), (5000, 25_000))
                for m in BASELINE_NAMES
            ),
            quick_params={"bank_images": 500, "bank_texts": 2500, "dim": 64},
            quick_points=tuple(
                {"method": m, "n_images": 200, "n_texts": 1000}
                for m in ("inverted_softmax", "nnn", "sinkhorn", "dsl")
            ),
            requires=("pillar_rerank.baselines",),
            summarize="benchmarks.speed_baselines:summarize",
            timeout_s=1800.0,
        ),
        Benchmark(
            "speed",
            "baselines_vs_originals",
            "Training-free methods vs their original formulas (COCO 5K proxy)",
            "benchmarks.speed_baselines:versus_originals",
            description="The originals' own case: COCO 5K proxy (5,000 x 20,000) from embeddings, banks from "
            "coco1k_dev, both directions, 2 threads. Ours (bank_from_embeddings + apply_both) and the "
            "original formula as dense numpy alternate in one process; fastest of the repeats, extra "
            "peak RSS, RSUM of both and the largest score difference.",
            params={"repeats": 6, "threads": 2},
            quick_params={"repeats": 1, "threads": 2, "methods": ["inverted_softmax", "dsl"]},
            requires=("benchmarks.speed_baselines", "pillar_rerank.baselines"),
            data_files=COCO_FILES,
            data_param="data_dir",
            summarize="benchmarks.speed_baselines:summarize_originals",
            timeout_s=3600.0,
        ),
        Benchmark(
            "speed",
            "sinkhorn_large_bank",
            "Sinkhorn family with a 100,000-query bank (stored vs streamed kernel)",
            "benchmarks.speed_baselines:sinkhorn_large_bank",
            description="Sinkhorn and dual-bank Sinkhorn fitted on a 100,000-caption bank against 5,000 "
            "images (DBSN: plus 20,000 bank images as extra gallery rows, d 256, synthetic), tau 0.01, "
            "10 iterations, 2 threads: fit time and extra peak RSS with the kernel kept in memory "
            "(kernel_bytes 11 GiB: 9.3 GiB for DBSN) and streamed (the default 2 GiB).",
            # the stored kernel first: the streamed dual-bank fit is the slower (205 s against 90 s)
            points=({"kernel_bytes": 11 * 2**30}, {"kernel_bytes": 2 * 2**30}),
            quick_params={"n_bank": 4000, "n_gallery": 500, "n_extra": 1000, "dim": 64},
            quick_points=({"kernel_bytes": 2**30}, {"kernel_bytes": 2**20}),
            requires=("benchmarks.speed_baselines", "pillar_rerank.baselines"),
            summarize="benchmarks.speed_baselines:summarize_large_bank",
            timeout_s=3600.0,
        ),
        Benchmark(
            "speed",
            "rerank",
            "LeaPRR re-ranking throughput",
            "benchmarks.adapters:leaprr_rerank_speed",
            description="One full re-rank in both directions (paper model size, untrained weights) at "
            "Flickr30K (1000 x 5000) and COCO 5K (5000 x 25,000) shapes: time per stage "
            "(neighbours, pillars, graph, model, combine), queries per second, peak RSS. The model "
            "stage runs in the precision 'auto' resolves to on this CPU; where that is bf16, it is "
            "also timed in fp32 on the same lists and the bare matmuls in both, in the same process.",
            params={"captions_per_image": 5, "dim": 256},
            points=({"n_images": 1000}, {"n_images": 5000}),
            quick_params={
                "captions_per_image": 5,
                "dim": 64,
                "config": {"embed_dim": 96, "num_heads": 4, "n_pillars": 16},
            },
            quick_points=({"n_images": 200},),
            requires=("benchmarks.bench_rerank", "pillar_rerank.reranker"),
            summarize="benchmarks.summaries:leaprr_rerank_speed",
        ),
        Benchmark(
            "speed",
            "training",
            "LeaPRR training throughput",
            "benchmarks.bench_train:run",
            description="Training items per second of the training loop at the paper's model size and at "
            "the reduced size of the accuracy suite, on synthetic embeddings (5 captions per image), "
            "and the ratio to the forward and backward of the model's bare matrix multiplies on "
            "the same batch shapes, timed in the same process; at the paper's size also in bf16 "
            "(against the fp32 loop on the same lists and bare bf16 matmuls, in one process).",
            points=(
                {"config": "paper", "n_images": 300},
                {"config": "small", "n_images": 1000},
                {"config": "paper", "n_images": 300, "precision": "bf16"},
            ),
            quick_points=({"config": {"embed_dim": 32, "num_heads": 2, "batch_size": 64, "n_pillars": 16},
                           "n_images": 100},),
            requires=("benchmarks.bench_train", "pillar_rerank.training"),
            summarize="benchmarks.summaries:leaprr_training_speed",
            timeout_s=3600.0,
        ),
    ],
    "scale": [
        Benchmark(
            "scale",
            "sinkhorn_bank",
            "Sinkhorn with a 100,000-query float16 memory-mapped bank",
            "benchmarks.baselines_accuracy:sinkhorn_scale",
            description="Sinkhorn normalisation at COCO 5K size (5000 x 25,000) with a 100,000 x 25,000 "
            "bank written as a float16 .npy and memory-mapped: bank build time, time per streamed "
            "iteration, peak RSS.",
            params={"n_bank": 100_000, "n_gallery": 25_000, "n_queries": 5000, "n_iter": 1},
            quick_params={"n_bank": 5000, "n_gallery": 2500, "n_queries": 500, "n_iter": 1},
            requires=("benchmarks.baselines_accuracy", "pillar_rerank.baselines"),
            timeout_s=3600.0,
        ),
        Benchmark(
            "scale",
            "memory_budget",
            "Input building under a memory budget, and approximate search",
            "benchmarks.bench_scale_inputs:run",
            description="pillar_rerank.lists.build_cache with max_memory at growing sizes up to the "
            "Flickr30K training shape (one fresh process per size, started by the function itself): "
            "time, peak additional RSS against the budget; recall and speed of IVF/HNSW vs exact.",
            params={
                "sizes": [list(s) for s in SCALE_SIZES],
                "d": 1024,
                "max_memory": "4GB",
                "ann_size": [4000, 20_000],
                "out": None,
            },
            quick_params={"sizes": [[500, 2500], [1000, 5000]], "d": 64, "max_memory": "512MB", "out": None},
            requires=("benchmarks.bench_scale_inputs", "pillar_rerank.lists.build"),
            summarize="benchmarks.summaries:scale_memory_budget",
        ),
        Benchmark(
            "scale",
            "multi_process_fit",
            "rerank fit: one process vs two gloo processes under torchrun",
            "benchmarks.ddp_fit:run",
            description="The same `rerank fit` (protocol a of the LeaPRR accuracy benchmark: real COCO "
            "caption proxy, coco1k_dev images 0-799 train, 800-999 dev; its reduced configuration, "
            "8 epochs) in one process with 2 threads and under torchrun with 2 processes of 1 thread: "
            "wall time, best dev RSUM, largest weight difference.",
            params={"protocol": "a", "processes": 2, "threads": 2,
                    "config": LEAPRR_ACCURACY_CONFIG["a"]},
            quick_params={"protocol": "a", "processes": 2, "threads": 2,
                          "config": {"epochs": 1, "embed_dim": 32, "num_heads": 2}},
            requires=("benchmarks.ddp_fit", "torch.distributed"),
            data_files=COCO_FILES,
            data_param="root",
            summarize="benchmarks.summaries:multi_process_fit",
        ),
    ],
}

SUITES["speed"].append(Benchmark(**importlib.import_module("benchmarks.search_latency").BENCHMARK))


def get_suite(name: str) -> list[Benchmark]:
    """Benchmarks of one suite, or of every suite but smoke for ``"all"``."""
    if name == "all":
        return [b for s, items in SUITES.items() if s != "smoke" for b in items]
    return list(SUITES[name])


def suite_names() -> list[str]:
    return [*SUITES, "all"]
