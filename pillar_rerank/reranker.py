"""PillarReranker: LeaPRR behind the estimator interface (fit -> self, rerank -> new scores).

Qu et al., "Learnable Pillar-based Re-ranking for Image-Text Retrieval", SIGIR 2023
(https://arxiv.org/abs/2304.12570); see ``spec/leaprr.md`` for every formula and default.

Slightly over ~400 lines: the estimator's public methods with their numpydoc docstrings; the work
itself lives in training, inference, compose, fusion and model_state.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pillar_rerank import distributed
from pillar_rerank._validation import check_k
from pillar_rerank.base import BaseReranker
from pillar_rerank.baselines.compose import BankSource, normalize_side, training_banks
from pillar_rerank.checkpoint import load_model_dir, load_model_extra, save_model_dir
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InputFileError, InvalidInputError, InvalidParameterError
from pillar_rerank.inference import base_matrices, base_scores, rerank_all, rescore
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.lists.memory import MemoryLists
from pillar_rerank.metrics.recall import recall_metrics
from pillar_rerank.model.network import MutualRerankNetwork
from pillar_rerank.model_state import network_from_state, read_reference_checkpoint
from pillar_rerank.provenance import (
    check_intra_source,
    compare_with_base,
    input_record,
    training_fingerprint,
)
from pillar_rerank.sharding import ShardResult, check_shard_set, shard_range
from pillar_rerank.typing import PathLikeStr
from pillar_rerank.utils.device import resolve_device

logger = logging.getLogger(__name__)


class PillarReranker(BaseReranker):
    """Learnable pillar-based re-ranking (LeaPRR) of an image x text score matrix.

    Parameters
    ----------
    config : LeaPRRConfig, optional
        Every hyper-parameter and input choice; ``None`` means the paper's defaults. It is
        stored unchanged and validated in :meth:`fit`.

    Attributes
    ----------
    model_ : MutualRerankNetwork
        The two direction networks (best dev-RSUM weights, or the last ones without dev data).
    config_ : LeaPRRConfig
        The validated config the model was trained with.
    history_ : dict
        ``"validations"``: one entry per dev evaluation (step, epoch, RSUM and recalls);
        ``"epochs"``: mean loss terms per epoch; ``"selected"``: which weights were kept.
    fusion_ : dict or None
        With ``score_fusion="zscore"``: each direction's rule (a fusion weight or the overwrite)
        chosen on dev for each output (``"mean"``: :meth:`rerank`; ``"per_direction"``:
        :meth:`rerank_both`) and the dev RSUMs behind the choice (:mod:`pillar_rerank.fusion`);
        None with the paper's overwrite.
    n_images_in_, n_texts_in_ : int
        Size of the training set.
    input_ : dict
        Input choices recorded for the model directory.

    Notes
    -----
    Departures from the reference code (LgQu/LeaPRR 50758d6), each documented in the spec:
    sparsity thresholds default to ``coef / n_nodes`` (``reference_thresholds=True`` restores
    0.8/32 and 0.8/8); the caption -> image map is explicit; fp32 on CPU (bf16 autocast on a
    CUDA GPU with ``precision="auto"``, ``"fp32"`` for parity); each image query is re-scored
    once (the reference recomputes it once per caption with identical values).
    The re-scored candidates overwrite their entries and the final matrix is the mean of the
    i2t and t2i matrices, as in the reference (§6.4). With a normaliser in front
    (``config.normalize``), normalised scores whose magnitude exceeds 1 are divided by their
    largest magnitude (rankings unchanged), so the network's cosines and the untouched entries
    are combined on one scale.

    Examples
    --------
    >>> from pillar_rerank.config import LeaPRRConfig
    >>> PillarReranker(LeaPRRConfig(epochs=2)).get_params()["config"].epochs
    2
    """

    def __init__(self, config: LeaPRRConfig | None = None) -> None:
        self.config = config

    # ------------------------------------------------------------------ helpers
    def _resolved_config(self) -> LeaPRRConfig:
        cfg = self.config if self.config is not None else LeaPRRConfig()
        if not isinstance(cfg, LeaPRRConfig):
            raise TypeError(
                f"PillarReranker: config must be a LeaPRRConfig or None; got {type(cfg).__name__}."
            )
        return cfg.validate()

    @staticmethod
    def _check_sizes(data: RetrievalSet, cfg: LeaPRRConfig, *, role: str) -> None:
        if not isinstance(data, RetrievalSet):
            raise TypeError(f"PillarReranker: {role} must be a RetrievalSet; got {type(data).__name__}.")
        owner = f"PillarReranker ({role}: {data.n_images} x {data.n_texts})"
        check_k(cfg.list_len_i2t - 1, n_gallery=data.n_texts, name="list_len_i2t - 1", owner=owner)
        check_k(cfg.list_len_t2i - 1, n_gallery=data.n_images, name="list_len_t2i - 1", owner=owner)
        check_k(cfg.n_pillars, n_gallery=min(data.n_images, data.n_texts), name="n_pillars", owner=owner)

    def _normalized(self, data: RetrievalSet, cfg: LeaPRRConfig,
                    bank_source: BankSource | None = None) -> RetrievalSet:
        """``data`` through the configured normaliser (:mod:`pillar_rerank.baselines.compose`).

        The bank comes from ``bank_source``, else the training side's embeddings (``bank_``).
        """
        bank = bank_source if bank_source is not None else getattr(self, "bank_", None)
        return normalize_side(data, cfg.normalize, cfg.normalize_params, bank)

    def _builder(self, data: RetrievalSet, cfg: LeaPRRConfig, *, role: str = "data",
                 max_memory: str | int | None = None, cache_dir: PathLikeStr | None = None,
                 require_cache: bool = False, show_progress: bool = False):
        """Lists of ``data``: searched now (under ``max_memory``), or read from / written to a cache.

        With ``cache_dir`` the lists live in ``cache_dir/<role>-<key>``, ``key`` a hash of what
        determines them (:func:`pillar_rerank.lists.cache_meta`: data fingerprint, list fields of
        the config, neighbour index), so a later fit or apply on the same inputs reuses them and
        different inputs never collide. ``require_cache`` refuses to build a missing one (shards
        run concurrently and must not build the same cache).
        """
        if cache_dir is None:
            from pillar_rerank.lists.builder import ListBuilder  # faiss: imported on first use

            return ListBuilder.from_data(data, cfg, max_memory=max_memory)
        from pillar_rerank.lists.build import build_cache
        from pillar_rerank.lists.cached import is_complete_cache

        path = _cache_path(data, cfg, role, cache_dir)
        if require_cache and not is_complete_cache(path):
            raise InvalidParameterError(
                f"cache_dir ({cache_dir}): no complete cache of this {role} side ({path.name}); shards "
                "run concurrently and must not build it. Build it once first (`rerank cache` or "
                "PillarReranker.cache_inputs), or drop the cache."
            )
        budget = max_memory if max_memory is not None else "4GB"
        return distributed.main_first(lambda: build_cache(data, cfg, path, max_memory=budget,
                                                          show_progress=show_progress))

    def model_digest(self) -> str:
        """SHA-256 over the fitted weights (names, shapes, bytes): identifies the model in shards."""
        self._check_is_fitted()
        h = hashlib.sha256()
        for name, tensor in sorted(self.model_.state_dict().items()):
            t = tensor.detach().to("cpu", torch.float32).contiguous()
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train: RetrievalSet,
        dev: RetrievalSet | None = None,
        *,
        checkpoint_dir: PathLikeStr | None = None,
        resume: bool = False,
        checkpoint_every: int | None = None,
        verbose: bool = True,
        max_memory: str | int | None = None,
        cache_dir: PathLikeStr | None = None,
        crash_at_step: int | None = None,
    ) -> PillarReranker:
        """Train both direction networks on ``train``; select by RSUM on ``dev``.

        Parameters
        ----------
        train : RetrievalSet
            Training side (its captions are the dataset items).
        dev : RetrievalSet, optional
            Validation side, evaluated every ``config.eval_every`` iterations and after each
            epoch; the best-RSUM weights are kept. Without it the last weights are kept (logged).
        checkpoint_dir : path, optional
            Where a resumable training state is written (atomically) every
            ``checkpoint_every`` iterations (default ``config.eval_every``) and after each epoch.
        resume : bool, default=False
            Continue from the state in ``checkpoint_dir``; the result is bitwise identical on
            CPU to an uninterrupted run with the same seed. When ``checkpoint_dir`` holds no
            checkpoint yet (a run stopped before writing its first one), training starts from
            scratch with a logged warning; a damaged checkpoint raises
            :class:`~pillar_rerank.exceptions.CheckpointError`.
        verbose : bool, default=True
            Show a tqdm progress bar with the running loss.
        max_memory : str or int, optional
            Bound on what input building allocates beyond the inputs ("4GB", bytes): neighbour
            searches and lists run in blocks sized to it. Results do not depend on it.
        cache_dir : path, optional
            Existing folder where the built lists of the training and dev sides are cached
            (versioned, validated on load) and reused by later runs on the same inputs.
        crash_at_step : int, optional
            Testing knob: raise :class:`~pillar_rerank.checkpoint.SimulatedCrash` before step N.

        Returns
        -------
        self
        """
        from pillar_rerank.training import Trainer

        cfg = self._resolved_config()
        self._check_sizes(train, cfg, role="train")
        if dev is not None:
            self._check_sizes(dev, cfg, role="dev")
        if resume and checkpoint_dir is None:
            raise InvalidParameterError("PillarReranker.fit: resume=True needs a checkpoint_dir.")
        if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
            raise InvalidParameterError(
                "The 'checkpoint_every' parameter of PillarReranker.fit must be an int >= 1; "
                f"got {checkpoint_every!r}."
            )
        device = resolve_device(cfg.device)
        if cache_dir is not None and distributed.is_distributed():
            distributed.setup(device)  # rank 0 builds the caches, the other ranks then read them
        bank_source, train_bank = training_banks(train, dev) if cfg.normalize is not None else (None, None)
        train_n = self._normalized(train, cfg, train_bank)
        dev_n = self._normalized(dev, cfg, bank_source) if dev is not None else None
        inputs = {"max_memory": max_memory, "cache_dir": cache_dir}
        train_src = MemoryLists(self._builder(train_n, cfg, role="train", **inputs), cfg.lists)
        dev_src = None
        if dev_n is not None:
            dev_src = MemoryLists(self._builder(dev_n, cfg, role="dev", **inputs), cfg.lists)

        def validate(model: MutualRerankNetwork) -> dict[str, float]:
            scores = rerank_all(dev_n, dev_src, model, lists=cfg.lists, precision=cfg.precision,
                                device=device)
            return recall_metrics(scores, dev_n.relevance)

        trainer = Trainer(
            cfg,
            device=device,
            train=train_src,
            txt_to_img=train.txt_to_img,
            validate=validate if dev is not None else None,
            verbose=verbose,
            fingerprint=training_fingerprint(train, cfg),
        )
        model, history = trainer.run(
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            checkpoint_every=checkpoint_every or cfg.eval_every,
            crash_at_step=crash_at_step,
        )
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise InvalidInputError(
                "PillarReranker.fit: training diverged (the weights hold NaN or inf); lower config.lr."
            )
        if dev is not None:
            compare_with_base(history, recall_metrics(base_scores(dev), dev.relevance))
        self.model_ = model.eval()
        self.fusion_ = None
        if cfg.score_fusion == "zscore":  # weights of the input/network mix, chosen on dev
            from pillar_rerank.fusion import choose_rules

            dev_shard = None
            if dev_n is not None:
                ids = {"i2t": torch.arange(dev_n.n_images), "t2i": torch.arange(dev_n.n_texts)}
                upd = rescore(dev_src, self.model_, ids, lists=cfg.lists, precision=cfg.precision,
                              device=device)
                dev_shard = ShardResult(0, 1, dev_n.n_images, dev_n.n_texts, "", **upd)
            self.fusion_ = choose_rules(dev_shard, dev_n, cfg)
        self.bank_ = bank_source
        self.config_ = cfg
        self.history_ = history
        self.n_images_in_ = train.n_images
        self.n_texts_in_ = train.n_texts
        self.input_ = input_record(train, dev, cfg)
        return self

    # ------------------------------------------------------------------ inference
    def rerank(self, test: RetrievalSet, *, max_memory: str | int | None = None,
               cache_dir: PathLikeStr | None = None, show_progress: bool = False) -> np.ndarray:
        """Re-ranked image x text score matrix of ``test`` (float32; the input is not modified).

        Every image query's candidates get the i2t network's cosines in a copy of the i2t
        matrix, every text query's candidates the t2i network's in a copy of the t2i matrix,
        and the result is their mean (spec §6.4), used for both directions (with
        ``score_fusion="zscore"`` each direction follows the rule chosen on dev, see
        :mod:`pillar_rerank.fusion`). ``max_memory`` and ``cache_dir`` are as in :meth:`fit`;
        ``show_progress`` draws a progress bar on stderr (on a terminal only). To split the work
        over processes, use :meth:`rerank_shard` and :meth:`merge`; for one matrix per
        direction, :meth:`rerank_both`.
        """
        data, shards = self._rerank_part(test, 0, 1, max_memory=max_memory, cache_dir=cache_dir,
                                         show_progress=show_progress)
        return self._combine(data, shards, "mean")

    def rerank_both(self, test: RetrievalSet, *, max_memory: str | int | None = None,
                    cache_dir: PathLikeStr | None = None, show_progress: bool = False) -> RetrievalSet:
        """One re-ranked matrix per direction, like the training-free methods' ``apply_both``.

        ``scores``: the i2t input with the image queries' candidates re-scored (rank image
        queries by it); ``t2i_scores``: the t2i input with the text queries' candidates re-scored
        (rank text queries by it), both image x text float32. Nothing is averaged across
        directions, so a normaliser that produced a matrix per direction keeps them apart
        (``recall_metrics(out.scores, out.relevance, t2i_scores=out.t2i_scores)`` evaluates it).
        With ``score_fusion="zscore"``, a direction for which the one-matrix output of
        :meth:`rerank` scored higher on dev gets that matrix instead (``fusion_["per_direction"]
        ["source"]``). Arguments as in :meth:`rerank`.
        """
        data, shards = self._rerank_part(test, 0, 1, max_memory=max_memory, cache_dir=cache_dir,
                                         show_progress=show_progress)
        i2t, t2i = self._combine(data, shards, "per_direction")
        return test.with_scores(i2t, t2i_scores=t2i)

    def rerank_shard(self, test: RetrievalSet, index: int, count: int, *,
                     max_memory: str | int | None = None,
                     cache_dir: PathLikeStr | None = None, show_progress: bool = False) -> ShardResult:
        """Re-rank only the contiguous share ``index`` of ``count`` of the image and text queries.

        Returns a :class:`~pillar_rerank.sharding.ShardResult` (the entries it re-scored, their
        new values and this model's digest); join all shares with :meth:`merge`.

        With ``cache_dir`` and ``count > 1`` the cache must already be complete (built once by
        :meth:`cache_inputs`, ``rerank cache`` or an unsharded :meth:`rerank`): concurrent shards
        must not build the same cache.
        """
        return self._rerank_part(test, index, count, max_memory=max_memory, cache_dir=cache_dir,
                                 show_progress=show_progress)[1][0]

    def _rerank_part(self, test: RetrievalSet, index: int, count: int, *, max_memory, cache_dir,
                     show_progress: bool = False) -> tuple[RetrievalSet, list[ShardResult]]:
        """The normalised test side and the one-element shard list of share ``index``/``count``."""
        self._check_is_fitted()
        cfg = self.config_
        self._check_sizes(test, cfg, role="test")
        device = next(self.model_.parameters()).device
        check_intra_source(self.input_, cfg, test)
        data = self._normalized(test, cfg)
        src = self._builder(data, cfg, role="test", max_memory=max_memory, cache_dir=cache_dir,
                            require_cache=count > 1)
        ids = {"i2t": torch.arange(test.n_images)[shard_range(test.n_images, index, count)],
               "t2i": torch.arange(test.n_texts)[shard_range(test.n_texts, index, count)]}
        upd = rescore(src, self.model_, ids, lists=cfg.lists, precision=cfg.precision, device=device,
                      show_progress=show_progress)
        return data, [ShardResult(index, count, test.n_images, test.n_texts, self.model_digest(), **upd)]

    def _combine(self, data: RetrievalSet, shards: list[ShardResult], output: str):
        """The network's scores of ``shards`` entered into ``data``'s matrices as ``output`` says.

        ``"mean"``: one matrix (spec §6.4); ``"per_direction"``: ``(i2t, t2i)``. With a fusion
        record the candidates follow its rules for that output (and a direction of the
        per-direction output may take the one-matrix output, see :mod:`pillar_rerank.fusion`),
        else the network's cosines overwrite them (the reference's).
        """
        from pillar_rerank.fusion import list_lengths, output_of

        return output_of(shards, *base_matrices(data), getattr(self, "fusion_", None), output,
                         list_lengths(self.config_), fp16=self.config_.reference_fp16)

    def cache_inputs(
        self, test: RetrievalSet, cache_dir: PathLikeStr, *, max_memory: str | int | None = None,
        show_progress: bool = False,
    ):
        """Build (or reuse) the cache of ``test``'s lists that ``rerank(test, cache_dir=...)`` reads.

        The step to run once before sharded re-ranking with a cache. Returns the
        :class:`~pillar_rerank.lists.cached.CachedLists`. ``show_progress``: a bar per list kind
        on stderr (on a terminal only).
        """
        self._check_is_fitted()
        self._check_sizes(test, self.config_, role="test")
        data = self._normalized(test, self.config_)
        return self._builder(data, self.config_, role="test", max_memory=max_memory, cache_dir=cache_dir,
                             show_progress=show_progress)

    def merge(self, test: RetrievalSet, shards: list[ShardResult | PathLikeStr]) -> np.ndarray:
        """Join the shards of :meth:`rerank_shard` (all present once, all from this model): the
        matrix :meth:`rerank` returns."""
        return self._combine(self._normalized(test, self.config_), self._checked_shards(test, shards), "mean")

    def merge_both(self, test: RetrievalSet, shards: list[ShardResult | PathLikeStr]) -> RetrievalSet:
        """Join the shards of :meth:`rerank_shard` into what :meth:`rerank_both` returns."""
        i2t, t2i = self._combine(self._normalized(test, self.config_), self._checked_shards(test, shards),
                                 "per_direction")
        return test.with_scores(i2t, t2i_scores=t2i)

    def _checked_shards(self, test: RetrievalSet,
                        shards: list[ShardResult | PathLikeStr]) -> list[ShardResult]:
        """Every shard of one run of this model on ``test``, loaded and checked."""
        self._check_is_fitted()
        names = [str(s) if not isinstance(s, ShardResult) else f"shard {s.index}" for s in shards]
        loaded = [s if isinstance(s, ShardResult) else ShardResult.load(s) for s in shards]
        return check_shard_set(
            loaded,
            n_images=test.n_images,
            n_texts=test.n_texts,
            model_digest=self.model_digest(),
            names=names,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: PathLikeStr, *, overwrite: bool = False, inputs=()) -> Path:
        """Write a model directory (safetensors weights + JSON config + checksums), atomically.

        With ``overwrite`` only a previous model directory is replaced, never a folder holding
        anything else or any of ``inputs`` (see :func:`~pillar_rerank.checkpoint.save_model_dir`).
        """
        self._check_is_fitted()
        doc = {
            "estimator": "PillarReranker",
            "config": self.config_.to_dict(),
            "fitted": {
                "n_images_in": self.n_images_in_,
                "n_texts_in": self.n_texts_in_,
                "input": self.input_,
                "history": self.history_,
                "fusion": getattr(self, "fusion_", None),
            },
        }
        state = {k: v for k, v in self.model_.state_dict().items()}
        extra = {"bank": self.bank_} if getattr(self, "bank_", None) is not None else None
        return save_model_dir(
            path, state_dict=state, config=doc, overwrite=overwrite, extra=extra, inputs=inputs
        )

    @classmethod
    def load(cls, path: PathLikeStr, *, device: str | None = None) -> PillarReranker:
        """Load a model directory written by :meth:`save`, verifying its checksums."""
        state, doc = load_model_dir(path)
        if not isinstance(doc, dict) or doc.get("estimator") != "PillarReranker":
            raise CheckpointError(
                f"model dir ({path}): config.json does not describe a PillarReranker model "
                f"(estimator={doc.get('estimator') if isinstance(doc, dict) else type(doc).__name__!r})."
            )
        try:
            cfg = LeaPRRConfig.from_dict(doc["config"])
            fitted = doc["fitted"]
        except (KeyError, TypeError, InvalidParameterError) as exc:
            raise CheckpointError(
                f"model dir ({path}): config.json is not a valid LeaPRR config ({exc})."
            ) from exc
        if device is not None:
            cfg = cfg.replace(device=device)
        self = cls(cfg)
        self.model_ = network_from_state(cfg, state, source=f"model dir ({path})")
        self.config_ = cfg
        self.n_images_in_ = int(fitted["n_images_in"])
        self.n_texts_in_ = int(fitted["n_texts_in"])
        self.input_ = fitted.get("input", {})
        self.history_ = fitted.get("history", {})
        from pillar_rerank.fusion import check_record

        self.fusion_ = check_record(fitted.get("fusion"), source=f"model dir ({path})")
        self.bank_ = load_model_extra(path, "bank")
        return self

    @classmethod
    def from_reference_checkpoint(
        cls, path: PathLikeStr, config: LeaPRRConfig | None = None, **fields: Any
    ) -> PillarReranker:
        """Import a checkpoint of the original LeaPRR code (``checkpoint_best.pth``).

        The file is read with ``torch.load(weights_only=True)`` (never unpickling arbitrary
        objects). The sizes the weights tell are inferred from the tensor shapes: ``n_pillars``,
        ``embed_dim``, ``depth``, ``mlp_ratio``, ``qkv_bias``. What they cannot tell comes from
        ``config`` (a whole config, whose sizes must agree with the weights) and/or ``fields``
        (single :class:`~pillar_rerank.config.LeaPRRConfig` fields on top of it or of the paper's
        defaults, e.g. ``list_len_i2t=32, reference_fp16=True``; a size among them must agree
        too). ``num_heads`` never shows in the shapes: without it the paper's 24 is used when it
        divides ``embed_dim``, else it must be given. ``reference_thresholds`` is set to True (the
        reference's fixed 0.8/32 and 0.8/8 sparsity thresholds); ``reference_fp16=True``
        reproduces its float16 inputs and score matrices (see ``LeaPRRConfig``).

        Raises :class:`~pillar_rerank.exceptions.InputFileError` when the file is missing or
        unreadable, :class:`~pillar_rerank.exceptions.CheckpointError` when its content is not a
        LeaPRR state dict or disagrees with the given sizes.
        """
        cfg, state = read_reference_checkpoint(path, config, **fields)
        self = cls(cfg)
        self.model_ = network_from_state(cfg, state, source=f"reference checkpoint ({path})")
        self.config_ = cfg
        self.n_images_in_ = 0
        self.n_texts_in_ = 0
        self.input_ = {"imported_from": str(path), "format": "LgQu/LeaPRR state dict"}
        self.fusion_ = None  # no dev side: the reference's overwrite
        self.history_ = {}
        return self


def _cache_path(data: RetrievalSet, cfg: LeaPRRConfig, role: str, cache_dir: PathLikeStr) -> Path:
    """``cache_dir/<role>-<hash of cache_meta>``; the folder ``cache_dir`` must exist."""
    from pillar_rerank.lists.fingerprint import cache_key

    root = Path(cache_dir)
    if not root.is_dir():
        raise InputFileError(f"cache_dir ({root}): not an existing folder; create it first.")
    return root / cache_key(data, cfg, prefix=role)


