"""PillarReranker: LeaPRR behind the estimator interface (fit -> self, rerank -> new scores).

Qu et al., "Learnable Pillar-based Re-ranking for Image-Text Retrieval", SIGIR 2023
(https://arxiv.org/abs/2304.12570); see ``spec/leaprr.md`` for every formula and default.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pillar_rerank import distributed
from pillar_rerank._lists_source import ListSource, get_builder_class
from pillar_rerank._validation import check_k
from pillar_rerank._version import __version__
from pillar_rerank.base import BaseReranker
from pillar_rerank.checkpoint import load_model_dir, load_model_extra, save_model_dir
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InputFileError, InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.metrics.recall import recall_metrics
from pillar_rerank.model.network import MutualRerankNetwork
from pillar_rerank.sharding import ShardResult, apply_updates, check_shard_set, shard_range
from pillar_rerank.typing import PathLikeStr
from pillar_rerank.utils.device import autocast, resolve_device

logger = logging.getLogger(__name__)

#: Nodes per forward pass at inference (bounds activation memory, not results).
INFERENCE_NODES = 16384


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

    def _normalized(self, data: RetrievalSet, cfg: LeaPRRConfig, bank_source=None) -> RetrievalSet:
        """Apply the configured training-free normaliser (composition), or return ``data``.

        Normalisers that need a query bank use the training side's embeddings (``bank_``,
        stored in the model directory) against ``data``'s gallery; on the training side itself
        its own queries are therefore part of the bank.
        """
        if cfg.normalize is None:
            return data
        try:
            from pillar_rerank.baselines import apply_both, get_baseline
            from pillar_rerank.baselines.bank import bank_from_embedding_arrays
        except ImportError as exc:
            raise InvalidParameterError(
                f"PillarReranker: normalize={cfg.normalize!r} needs pillar_rerank.baselines, "
                f"which is not available ({exc})."
            ) from exc
        method, t2i_method = _normalizer_pair(get_baseline, cfg.normalize, cfg.normalize_params)
        bank = None
        if getattr(method, "needs_bank", False):
            source = bank_source if bank_source is not None else getattr(self, "bank_", None)
            if source is None or not data.has_embeddings:
                raise InvalidInputError(
                    f"PillarReranker: normalize={cfg.normalize!r} needs a query bank, built from the "
                    f"training side's embeddings and {data.name}'s; give image and text embeddings."
                )
            bank = bank_from_embedding_arrays(
                source["images"].numpy(),
                source["texts"].numpy(),
                data.image_embeddings,
                data.text_embeddings,
            )
        return _on_cosine_scale(apply_both(method, data, bank, t2i_method=t2i_method))

    def _builder(self, data: RetrievalSet, cfg: LeaPRRConfig, *, role: str = "data",
                 max_memory: str | int | None = None, cache_dir: PathLikeStr | None = None,
                 require_cache: bool = False):
        """Lists of ``data``: searched now (under ``max_memory``), or read from / written to a cache.

        With ``cache_dir`` the lists live in ``cache_dir/<role>-<key>``, ``key`` a hash of what
        determines them (:func:`pillar_rerank.cache.cache_meta`: data fingerprint, list fields of
        the config, neighbour index), so a later fit or apply on the same inputs reuses them and
        different inputs never collide. ``require_cache`` refuses to build a missing one (shards
        run concurrently and must not build the same cache).
        """
        if cache_dir is None:
            return get_builder_class().from_data(data, cfg, max_memory=max_memory)
        from pillar_rerank.cache import build_cache, is_complete_cache

        path = _cache_path(data, cfg, role, cache_dir)
        if require_cache and not is_complete_cache(path):
            raise InvalidParameterError(
                f"cache_dir ({cache_dir}): no complete cache of this {role} side ({path.name}); shards "
                "run concurrently and must not build it. Build it once first (`rerank cache` or "
                "PillarReranker.cache_inputs), or drop the cache."
            )
        budget = max_memory if max_memory is not None else "4GB"
        return distributed.main_first(lambda: build_cache(data, cfg, path, max_memory=budget))

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
        from pillar_rerank._trainer import Trainer

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
        bank_source = None
        if cfg.normalize is not None and train.has_embeddings:
            bank_source = {
                "images": torch.tensor(np.asarray(train.image_embeddings, dtype=np.float32)),
                "texts": torch.tensor(np.asarray(train.text_embeddings, dtype=np.float32)),
            }
        # Each side's bank must not contain its own queries (a query's match to itself would be
        # part of its hubness estimate, unlike at test time): the training side is normalised
        # with the dev side's queries as the bank when the dev side has embeddings.
        train_bank = bank_source
        if bank_source is not None and dev is not None and dev.has_embeddings:
            train_bank = {
                "images": torch.tensor(np.asarray(dev.image_embeddings, dtype=np.float32)),
                "texts": torch.tensor(np.asarray(dev.text_embeddings, dtype=np.float32)),
            }
        train_n = self._normalized(train, cfg, train_bank)
        dev_n = self._normalized(dev, cfg, bank_source) if dev is not None else None
        inputs = {"max_memory": max_memory, "cache_dir": cache_dir}
        train_src = ListSource(self._builder(train_n, cfg, role="train", **inputs), cfg)
        dev_src = None
        if dev_n is not None:
            dev_src = ListSource(self._builder(dev_n, cfg, role="dev", **inputs), cfg)

        def validate(model: MutualRerankNetwork) -> dict[str, float]:
            scores = self._rerank_matrix(dev_n, dev_src, model, device=device)
            return recall_metrics(scores, dev_n.relevance)

        trainer = Trainer(
            cfg,
            device=device,
            train=train_src,
            txt_to_img=train.txt_to_img,
            validate=validate if dev is not None else None,
            verbose=verbose,
            fingerprint=_fingerprint(train, cfg),
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
        self.model_ = model.eval()
        self.fusion_ = None
        if cfg.score_fusion == "zscore":  # weights of the input/network mix, chosen on dev
            from pillar_rerank.fusion import choose_weights

            dev_shard = None if dev_n is None else ShardResult(
                0, 1, dev_n.n_images, dev_n.n_texts, "", **self._updates(
                    dev_src, self.model_, torch.arange(dev_n.n_images), torch.arange(dev_n.n_texts), device))
            self.fusion_ = choose_weights(dev_shard, dev_n, cfg)
        self.bank_ = bank_source
        self.config_ = cfg
        self.history_ = history
        self.n_images_in_ = train.n_images
        self.n_texts_in_ = train.n_texts
        self.input_ = _input_record(train, dev, cfg)
        return self

    # ------------------------------------------------------------------ inference
    def _updates(
        self,
        src,
        model: MutualRerankNetwork,
        image_ids: torch.Tensor,
        text_ids: torch.Tensor,
        device: torch.device,
    ) -> dict[str, np.ndarray]:
        cfg = self.config_ if hasattr(self, "config_") else self._resolved_config()
        out: dict[str, list] = {
            k: [] for k in ("i2t_rows", "i2t_cols", "i2t_values", "t2i_rows", "t2i_cols", "t2i_values")
        }
        model.eval()
        with torch.inference_mode(), autocast(device, cfg.precision):
            block = max(1, INFERENCE_NODES // cfg.list_len_i2t)
            for s in range(0, image_ids.shape[0], block):
                lists = src.image_lists(image_ids[s : s + block]).to(device)
                new = model.i2t.score_lists(lists)[:, 1:].float().cpu()
                cand = lists.candidates.cpu()
                out["i2t_rows"].append(lists.query_ids.cpu()[:, None].expand_as(cand).reshape(-1))
                out["i2t_cols"].append(cand.reshape(-1))
                out["i2t_values"].append(new.reshape(-1))
            block = max(1, INFERENCE_NODES // cfg.list_len_t2i)
            for s in range(0, text_ids.shape[0], block):
                lists = src.text_lists(text_ids[s : s + block]).to(device)
                new = model.t2i.score_lists(lists)[:, 1:].float().cpu()
                cand = lists.candidates.cpu()
                out["t2i_rows"].append(cand.reshape(-1))
                out["t2i_cols"].append(lists.query_ids.cpu()[:, None].expand_as(cand).reshape(-1))
                out["t2i_values"].append(new.reshape(-1))
        return {
            k: (
                torch.cat(v).numpy()
                if v
                else np.zeros(0, dtype=np.int64 if "values" not in k else np.float32)
            )
            for k, v in out.items()
        }

    def _rerank_matrix(
        self, data: RetrievalSet, src, model: MutualRerankNetwork, *, device: torch.device
    ) -> np.ndarray:
        upd = self._updates(src, model, torch.arange(data.n_images), torch.arange(data.n_texts), device)
        shard = ShardResult(0, 1, data.n_images, data.n_texts, "", **upd)
        return apply_updates(*_bases(data), [shard])

    def _fused(self, data: RetrievalSet, shard: ShardResult) -> ShardResult:
        """``shard`` with its network scores fused with ``data``'s (``fusion_``), or as it is."""
        if getattr(self, "fusion_", None) is None:
            return shard
        from pillar_rerank.fusion import fuse_shard, list_lengths

        weights = {d: self.fusion_[f"w_{d}"] for d in ("i2t", "t2i")}
        return fuse_shard(shard, *_bases(data), weights, list_lengths(self.config_))

    def rerank(self, test: RetrievalSet, *, shard: tuple[int, int] | None = None,
               max_memory: str | int | None = None,
               cache_dir: PathLikeStr | None = None) -> np.ndarray | ShardResult:
        """Re-ranked image x text score matrix of ``test`` (float32; the input is not modified).

        Every image query's candidates get the i2t network's cosines in a copy of the i2t
        matrix, every text query's candidates the t2i network's in a copy of the t2i matrix,
        and the result is their mean (spec §6.4), used for both directions.

        With ``shard=(i, n)`` only share ``i`` of ``n`` of the queries is re-ranked and the
        partial :class:`~pillar_rerank.sharding.ShardResult` is returned (see
        :meth:`rerank_shard` and :meth:`merge`). ``max_memory`` and ``cache_dir`` are as in
        :meth:`fit`.
        """
        self._check_is_fitted()
        if shard is not None:
            return self.rerank_shard(test, *shard, max_memory=max_memory, cache_dir=cache_dir)
        return self.rerank_shard(test, 0, 1, max_memory=max_memory, cache_dir=cache_dir, _as_matrix=True)

    def rerank_shard(self, test: RetrievalSet, index: int, count: int, *,
                     max_memory: str | int | None = None, cache_dir: PathLikeStr | None = None,
                     _as_matrix: bool = False):
        """Re-rank only the contiguous share ``index`` of ``count`` of the image and text queries.

        Returns a :class:`~pillar_rerank.sharding.ShardResult` (the entries it re-scored, their
        new values and this model's digest); join all shares with :meth:`merge`.

        With ``cache_dir`` and ``count > 1`` the cache must already be complete (built once by
        :meth:`cache_inputs`, ``rerank cache`` or an unsharded :meth:`rerank`): concurrent shards
        must not build the same cache.
        """
        self._check_is_fitted()
        cfg = self.config_
        self._check_sizes(test, cfg, role="test")
        device = next(self.model_.parameters()).device
        data = self._normalized(test, cfg)
        builder = self._builder(data, cfg, role="test", max_memory=max_memory, cache_dir=cache_dir,
                                require_cache=count > 1)
        images = torch.arange(test.n_images)[shard_range(test.n_images, index, count)]
        texts = torch.arange(test.n_texts)[shard_range(test.n_texts, index, count)]
        upd = self._updates(builder, self.model_, images, texts, device)
        shard = ShardResult(index, count, test.n_images, test.n_texts, self.model_digest(), **upd)
        shard = self._fused(data, shard)
        if _as_matrix:
            return apply_updates(*_bases(data), [shard])
        return shard

    def cache_inputs(
        self, test: RetrievalSet, cache_dir: PathLikeStr, *, max_memory: str | int | None = None
    ):
        """Build (or reuse) the cache of ``test``'s lists that ``rerank(test, cache_dir=...)`` reads.

        The step to run once before sharded re-ranking with a cache. Returns the
        :class:`~pillar_rerank.cache.CachedLists`.
        """
        self._check_is_fitted()
        self._check_sizes(test, self.config_, role="test")
        data = self._normalized(test, self.config_)
        return self._builder(data, self.config_, role="test", max_memory=max_memory, cache_dir=cache_dir)

    def merge(self, test: RetrievalSet, shards: list[ShardResult | PathLikeStr]) -> np.ndarray:
        """Join the shards of :meth:`rerank_shard` (all present once, all from this model)."""
        self._check_is_fitted()
        names = [str(s) if not isinstance(s, ShardResult) else f"shard {s.index}" for s in shards]
        loaded = [s if isinstance(s, ShardResult) else ShardResult.load(s) for s in shards]
        loaded = check_shard_set(
            loaded,
            n_images=test.n_images,
            n_texts=test.n_texts,
            model_digest=self.model_digest(),
            names=names,
        )
        return apply_updates(*_bases(self._normalized(test, self.config_)), loaded)

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
        self._install(cfg, state, source=f"model dir ({path})")
        self.n_images_in_ = int(fitted["n_images_in"])
        self.n_texts_in_ = int(fitted["n_texts_in"])
        self.input_ = fitted.get("input", {})
        self.history_ = fitted.get("history", {})
        from pillar_rerank.fusion import check_record

        self.fusion_ = check_record(fitted.get("fusion"), source=f"model dir ({path})")
        self.bank_ = load_model_extra(path, "bank")
        return self

    def _install(self, cfg: LeaPRRConfig, state: dict[str, torch.Tensor], *, source: str) -> None:
        model = MutualRerankNetwork.from_config(cfg)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        bad = sorted(
            k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
        )
        if missing or extra or bad:
            first = (
                f"missing {missing[0]!r}"
                if missing
                else f"unexpected {extra[0]!r}"
                if extra
                else f"{bad[0]!r} has shape {tuple(state[bad[0]].shape)}, the config needs "
                f"{tuple(expected[bad[0]].shape)}"
            )
            raise CheckpointError(
                f"{source}: the weights do not match the config (embed_dim={cfg.embed_dim}, "
                f"depth={cfg.depth}, "
                f"n_pillars={cfg.n_pillars}, anchor={cfg.anchor!r}): {len(missing)} missing, {len(extra)} "
                f"unexpected, {len(bad)} mis-shaped tensors ({first})."
            )
        bad_values = sorted(
            k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()
        )
        if bad_values:
            raise CheckpointError(
                f"{source}: {len(bad_values)} weight tensor(s) hold NaN or inf (first: {bad_values[0]!r}); "
                "the model is unusable (a diverged training run?)."
            )
        model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
        self.model_ = model.to(resolve_device(cfg.device)).eval()
        self.config_ = cfg

    @classmethod
    def from_reference_checkpoint(
        cls, path: PathLikeStr, config: LeaPRRConfig | None = None
    ) -> PillarReranker:
        """Import a checkpoint of the original LeaPRR code (``checkpoint_best.pth``).

        The file is read with ``torch.load(weights_only=True)`` (never unpickling arbitrary
        objects). Sizes are inferred from the tensor shapes; ``config`` supplies what shapes
        cannot tell (``num_heads``, list lengths, graph settings; default: the paper's) and
        must agree with what they do tell. ``reference_thresholds`` is set to True (the
        reference's fixed 0.8/32 and 0.8/8 sparsity thresholds).
        """
        from pillar_rerank.model.reference import convert_reference_state_dict, unwrap_state_dict

        p = Path(path)
        if not p.is_file():
            raise InputFileError(f"reference checkpoint ({p}): file not found.")
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unreadable, truncated or unsafe content
            raise CheckpointError(
                f"reference checkpoint ({p}): cannot be read safely (weights_only=True): {exc}"
            ) from exc
        state, inferred = convert_reference_state_dict(unwrap_state_dict(obj, source=str(p)), source=str(p))
        base = config if config is not None else LeaPRRConfig()
        if config is not None:
            clash = {k: (getattr(config, k), v) for k, v in inferred.items() if getattr(config, k) != v}
            if clash:
                k, (given, found) = next(iter(clash.items()))
                raise CheckpointError(
                    f"reference checkpoint ({p}): config has {k}={given!r} but the weights imply {found!r}."
                )
        cfg = base.replace(**inferred, reference_thresholds=True)
        self = cls(cfg)
        self._install(cfg, state, source=f"reference checkpoint ({p})")
        self.n_images_in_ = 0
        self.n_texts_in_ = 0
        self.input_ = {"imported_from": str(p), "format": "LgQu/LeaPRR state dict"}
        self.fusion_ = None  # no dev side: the reference's overwrite
        self.history_ = {}
        return self


def _cache_path(data: RetrievalSet, cfg: LeaPRRConfig, role: str, cache_dir: PathLikeStr) -> Path:
    """``cache_dir/<role>-<hash of cache_meta>``; the folder ``cache_dir`` must exist."""
    from pillar_rerank.cache import cache_key

    root = Path(cache_dir)
    if not root.is_dir():
        raise InputFileError(f"cache_dir ({root}): not an existing folder; create it first.")
    return root / cache_key(data, cfg, prefix=role)


def _on_cosine_scale(data: RetrievalSet) -> RetrievalSet:
    """Divide normalised scores by their largest magnitude when it exceeds 1 (rankings kept).

    The re-scored candidates get the network's cosines, in [-1, 1], while the other entries keep
    their (normalised) scores. A normaliser that changes the scale (DSL multiplies by
    ``n_queries * softmax``: values in the thousands) would otherwise leave the untouched entries
    above every re-scored candidate. Scores already within [-1, 1] (NNN, CSLS, ... on cosines)
    are returned unchanged. Division by a positive constant is monotone: no order flips, though
    float32 rounding can tie entries that were already within one ulp.
    """
    matrices = {"scores": data.scores, "t2i_scores": data.t2i_scores}
    largest = max(max(float(m.max()), -float(m.min())) for m in matrices.values() if m is not None)
    if largest <= 1.0:
        return data
    logger.info("normalised scores reach |s| = %.4g; dividing both directions by it (rankings unchanged)",
                largest)
    scaled = {k: None if m is None else (np.asarray(m, dtype=np.float32) / np.float32(largest))
              for k, m in matrices.items()}
    return data.with_scores(scaled["scores"], t2i_scores=scaled["t2i_scores"], name=data.name)


def _bases(data: RetrievalSet) -> tuple[np.ndarray, np.ndarray | None]:
    """The i2t base matrix and the t2i one (``None`` when both directions share it)."""
    i2t = data.similarity()
    t2i = np.asarray(data.t2i_scores, dtype=np.float32) if data.t2i_scores is not None else None
    return i2t, t2i


def _data_digest(data: RetrievalSet, *, n_rows: int = 64) -> str:
    """SHA-256 over up to ``n_rows`` evenly spaced rows of every matrix of ``data`` (a sample, so
    that huge memory-mapped inputs are not read in full) plus the caption -> image map."""
    h = hashlib.sha256(np.ascontiguousarray(data.txt_to_img).tobytes())
    for name in ("scores", "t2i_scores", "image_embeddings", "text_embeddings", "image_image", "text_text"):
        m = getattr(data, name)
        if m is None:
            continue
        rows = np.unique(np.linspace(0, m.shape[0] - 1, min(m.shape[0], n_rows)).astype(np.int64))
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(m[rows], dtype=np.float32)).tobytes())
    return h.hexdigest()


def _fingerprint(train: RetrievalSet, cfg: LeaPRRConfig) -> dict[str, Any]:
    """What a resumed run must match: problem size, ground truth, (sampled) data and the config."""
    digest = _data_digest(train)
    return {
        "n_images": train.n_images,
        "n_texts": train.n_texts,
        "data_sha256_sampled": digest,
        "config": {k: v for k, v in cfg.to_dict().items() if k != "device"},
    }


def _input_record(train: RetrievalSet, dev: RetrievalSet | None, cfg: LeaPRRConfig) -> dict[str, Any]:
    def side(d: RetrievalSet) -> dict[str, Any]:
        return {
            "name": d.name,
            "n_images": d.n_images,
            "n_texts": d.n_texts,
            "scores": d.scores is not None,
            "embeddings": d.has_embeddings,
            "image_image": d.image_image is not None,
            "text_text": d.text_text is not None,
            "t2i_scores": d.t2i_scores is not None,
        }

    return {
        "package_version": __version__,
        "train": side(train),
        "dev": side(dev) if dev is not None else None,
        "intra_source": cfg.intra_source,
        "normalize": cfg.normalize,
        "normalize_params": dict(cfg.normalize_params),
    }


def _normalizer_pair(get_baseline, name: str, params: dict):
    """The (i2t, t2i) normaliser objects: one shared setting, or ``{"i2t": {...}, "t2i": {...}}``."""
    if params and set(params) <= {"i2t", "t2i"}:
        return get_baseline(name, **params.get("i2t", {})), get_baseline(name, **params.get("t2i", {}))
    return get_baseline(name, **params), None
