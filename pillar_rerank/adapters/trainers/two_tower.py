"""Generic two-tower trainer over precomputed features with pluggable heads and losses."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from pillar_rerank._validation import Options
from pillar_rerank.adapters.config import HeadConfig, TrainingConfig
from pillar_rerank.adapters.distances import LateInteractionSimilarity
from pillar_rerank.adapters.features import FeatureSet
from pillar_rerank.adapters.heads import make_head
from pillar_rerank.adapters.losses import LOSSES, get_loss
from pillar_rerank.adapters.losses.listwise import rsc_relevance
from pillar_rerank.adapters.trainers.base import BaseTrainer
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError

SCORE_BUDGET_BYTES = 256 * 2**20


class TwoTowerModel(torch.nn.Module):
    """An image head and a text head over frozen features, scored by dot product or MaxSim.

    With vector features each side is one unit vector and ``sims = img @ txt.T``; with token
    features (``TokenHead``) each side is a set of unit token vectors scored by late interaction
    (:class:`~pillar_rerank.adapters.distances.LateInteractionSimilarity`), optionally keeping
    only the first ``n_out`` output positions (Inflate & Shrink's base/fast modes).
    """

    def __init__(
        self,
        image_head: torch.nn.Module,
        text_head: torch.nn.Module,
        *,
        token_level: bool,
        n_out: int | None = None,
    ) -> None:
        super().__init__()
        self.image_head, self.text_head = image_head, text_head
        self.token_level, self.n_out = bool(token_level), n_out
        self.late_interaction = LateInteractionSimilarity()

    def _encode(self, head: torch.nn.Module, x: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
        if not self.token_level:
            return {"emb": head(x)}
        tokens, mask = head(x, mask)
        if self.n_out is not None:
            tokens, mask = tokens[:, : self.n_out], mask[:, : self.n_out]
        return {"tokens": tokens, "mask": mask}

    def encode_images(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        return self._encode(self.image_head, x, mask)

    def encode_texts(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        return self._encode(self.text_head, x, mask)

    def similarity(self, img: dict[str, Tensor], txt: dict[str, Tensor]) -> Tensor:
        if not self.token_level:
            return img["emb"] @ txt["emb"].t()
        return self.late_interaction(
            img["tokens"], txt["tokens"], query_mask=img["mask"], ref_mask=txt["mask"]
        )

    def item_embeddings(self, img: dict[str, Tensor], txt: dict[str, Tensor]) -> tuple[Tensor, Tensor] | None:
        return None if self.token_level else (img["emb"], txt["emb"])

    def score_block_rows(self, n_texts: int) -> int:
        per_row = n_texts * 4
        if self.token_level:
            per_row *= 64 * 64  # a generous token-pair bound per (image, text)
        return max(1, SCORE_BUDGET_BYTES // per_row)


def head_kwargs(cfg: HeadConfig, kind: str) -> dict[str, Any]:
    """The keyword arguments of :func:`make_head` for ``kind`` (the fields that kind uses)."""
    return {name: getattr(cfg, name) for name in HeadConfig.USES[kind] if name != "n_out"}


def caption_index(relevance, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padded caption ids ``[len(images), K_max]`` of each image and their validity mask."""
    counts = relevance.captions_per_image[images]
    k = int(counts.max())
    idx = np.zeros((images.shape[0], k), dtype=np.int64)
    mask = np.arange(k)[None, :] < counts[:, None]
    starts = relevance.indptr[images]
    rows, cols = np.nonzero(mask)
    idx[rows, cols] = relevance.indices[starts[rows] + cols]
    return idx, mask


class TwoTowerTrainer(BaseTrainer):
    """Train an alignment head on each side of frozen features with any registered loss.

    Parameters
    ----------
    loss : {"infonce", "vsepp", "vse0", "triplet", "listwise", "lp_hinge"}, default="infonce"
    loss_params : dict, optional
        Keyword arguments of the loss class (e.g. ``{"weight": 0.3}`` for listwise, which has no
        default weight).
    head : HeadConfig, optional
        The two heads (default ``HeadConfig()``: linear, ``embed_dim=256``). Vector features
        take identity/linear/mlp heads, token-level features ``kind="token"``.
    training : TrainingConfig, optional
        Optimiser and loop (default ``TrainingConfig()``: 10 epochs, batch 128, AdamW 5e-4).

    Notes
    -----
    The listwise loss takes RSC relevance from a frozen caption table: the training side's
    ``caption_table``, else its (vector) text features. Captions of the same image in one batch
    are positives of each other in every loss (the references count them as negatives).

    Examples
    --------
    >>> import numpy as np
    >>> from pillar_rerank import Relevance
    >>> from pillar_rerank.adapters import FeatureSet, HeadConfig, TrainingConfig, TwoTowerTrainer
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(size=(20, 8)).astype("float32")
    >>> txt = np.repeat(img, 2, axis=0) + 0.1 * rng.normal(size=(40, 8)).astype("float32")
    >>> data = FeatureSet(img, txt, Relevance.from_captions_per_image(20, 2))
    >>> trainer = TwoTowerTrainer(
    ...     head=HeadConfig(embed_dim=8), training=TrainingConfig(epochs=2, batch_size=8)
    ... ).fit(data)
    >>> trainer.score(data).shape
    (20, 40)
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "loss": Options(frozenset(LOSSES)),
        "loss_params": [None, dict],
    }

    def __init__(
        self,
        *,
        loss: str = "infonce",
        loss_params: dict | None = None,
        head: HeadConfig | None = None,
        training: TrainingConfig | None = None,
    ) -> None:
        self.loss = loss
        self.loss_params = loss_params
        self.head = head
        self.training = training

    # -------------------------------------------------------------- model
    def _build_model(self, spec: dict[str, Any]) -> torch.nn.Module:
        cfg = self.head_config()
        token_level = bool(spec["token_level"])
        for kind in cfg.kinds:
            if (kind == "token") != token_level:
                raise InvalidParameterError(
                    f"{type(self).__name__}: head {kind!r} does not fit "
                    f"{'token-level (n, N, d)' if token_level else 'vector (n, d)'} features; "
                    f"use {'kind=token' if token_level else 'identity, linear or mlp'}."
                )
        image_head, text_head = (
            make_head(kind, dim, cfg.embed_dim, **head_kwargs(cfg, kind))
            for kind, dim in zip(cfg.kinds, (spec["image_dim"], spec["text_dim"]))
        )
        return TwoTowerModel(image_head, text_head, token_level=token_level, n_out=cfg.n_out)

    def _prepare(self, train: FeatureSet | None) -> None:
        self.loss_fn_ = get_loss(self.loss, self.loss_params)
        self._table = None
        if "relevance" in self.loss_fn_.requires and train is not None:
            table = train.relevance_table()
            if table is None:
                raise InvalidInputError(
                    f"{type(self).__name__}: loss {self.loss!r} needs a frozen caption table "
                    "(FeatureSet.caption_table) when the text features are token-level."
                )
            self._table = torch.as_tensor(np.array(table, dtype=np.float32))
            self._relevance = train.relevance

    def _extra_parameters(self) -> list[torch.nn.Parameter]:
        loss_fn = getattr(self, "loss_fn_", None)
        return [] if loss_fn is None else list(loss_fn.parameters())

    # -------------------------------------------------------------- training step
    def _loss_inputs(self, batch: dict[str, Any], sims: Tensor) -> dict[str, Tensor]:
        if self._table is None:
            return {}
        idx, mask = caption_index(self._relevance, batch["images"])
        table = self._table.to(sims.device)
        return {
            "relevance": rsc_relevance(
                table[torch.as_tensor(idx)],
                table[torch.as_tensor(batch["captions"])],
                pos_mask=batch["pos_mask"],
                caps_mask=torch.as_tensor(mask, device=sims.device),
            ).to(sims.dtype)
        }

    def _batch_loss(self, model: torch.nn.Module, batch: dict[str, Any], epoch: int) -> Tensor:
        sims = model.similarity(model.encode_images(**batch["image"]), model.encode_texts(**batch["text"]))
        return self.loss_fn_(sims, pos_mask=batch["pos_mask"], **self._loss_inputs(batch, sims))
