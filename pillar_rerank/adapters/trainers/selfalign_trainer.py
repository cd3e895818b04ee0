"""SelfAlign trainer: a token-level two-tower model trained with VSE++ on the SelfAlign score plus
concept-level (LCA) and context-level (CRA) self-supervised alignment."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from pillar_rerank._validation import Interval
from pillar_rerank.adapters.config import HeadConfig, TrainingConfig
from pillar_rerank.adapters.distances import selfalign_similarity
from pillar_rerank.adapters.features import FeatureSet
from pillar_rerank.adapters.heads.context import ContextHead, PrototypeBank, masked_mean
from pillar_rerank.adapters.losses import ConceptAlignmentLoss, ContextAlignmentLoss, VSEPPLoss
from pillar_rerank.adapters.trainers.base import BaseTrainer
from pillar_rerank.exceptions import InvalidParameterError

SCORE_BUDGET_BYTES = 256 * 2**20


class SelfAlignModel(torch.nn.Module):
    """Token projections, the backbone embedding, two context heads and the prototype bank.

    Per modality: ``x = Linear(tokens)`` are the context-level token features, ``norm(x)`` the
    concept-level ones, ``norm(masked_mean(x))`` the backbone embedding (so ``s(I, T)`` is a
    cosine), and a :class:`ContextHead` gives locals, the global query and the fused context.
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        embed_dim: int,
        num_prototypes: int,
        *,
        context_weight: float = 0.5,
        mask_padding: bool = True,
        context_relu: bool = True,
    ) -> None:
        super().__init__()
        self.image_proj = torch.nn.Linear(image_dim, embed_dim)
        self.text_proj = torch.nn.Linear(text_dim, embed_dim)
        self.image_context = ContextHead(embed_dim, relu=context_relu)
        self.text_context = ContextHead(embed_dim, relu=context_relu)
        self.prototypes = PrototypeBank(embed_dim, num_prototypes)
        self.context_weight, self.mask_padding = float(context_weight), bool(mask_padding)

    def _encode(
        self, proj: torch.nn.Module, context: ContextHead, x: Tensor, mask: Tensor | None, full: bool
    ) -> dict[str, Tensor]:
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        h = proj(x)
        used_mask = mask if self.mask_padding else None
        locals_, global_query, fused = context(h, used_mask)
        out = {
            "emb": F.normalize(masked_mean(h, mask), dim=-1),
            "locals_mean": masked_mean(locals_, used_mask),
            "fused": fused,
        }
        if full:
            out.update(
                {"concept": F.normalize(h, dim=-1), "locals": locals_, "global": global_query, "mask": mask}
            )
        return out

    def encode_images(
        self, x: Tensor, mask: Tensor | None = None, *, full: bool = False
    ) -> dict[str, Tensor]:
        return self._encode(self.image_proj, self.image_context, x, mask, full)

    def encode_texts(self, x: Tensor, mask: Tensor | None = None, *, full: bool = False) -> dict[str, Tensor]:
        return self._encode(self.text_proj, self.text_context, x, mask, full)

    def similarity(self, img: dict[str, Tensor], txt: dict[str, Tensor]) -> Tensor:
        return selfalign_similarity(
            img["emb"] @ txt["emb"].t(),
            img["locals_mean"],
            img["fused"],
            txt["locals_mean"],
            txt["fused"],
            weight=self.context_weight,
        )

    def item_embeddings(self, img: dict[str, Tensor], txt: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``[emb; w*mean(l_v); w*c_v]`` and ``[emb; c_t; mean(l_t)]``: their dot products are the scores."""
        w = self.context_weight
        return (
            torch.cat([img["emb"], w * img["locals_mean"], w * img["fused"]], dim=1),
            torch.cat([txt["emb"], txt["fused"], txt["locals_mean"]], dim=1),
        )

    def score_block_rows(self, n_texts: int) -> int:
        return max(1, SCORE_BUDGET_BYTES // (n_texts * 4))


class SelfAlignTrainer(BaseTrainer):
    r"""SelfAlign on token-level features (regions/patches and words/tokens).

    Objective per batch: :math:`L = L_{rank}(s_{SA}) + \lambda_c L_{LCA} + \lambda_x L_{ctx}` with
    :math:`L_{rank}` the VSE++ hardest-negative triplet loss summed over the batch on the SelfAlign
    score, :math:`L_{LCA}` the concept alignment of words to Sinkhorn region assignments and
    :math:`L_{ctx} = \tfrac12 CRA(\ell^v, g^t) + \tfrac12 CRA(\ell^t, g^v)`. During the first
    ``freeze_prototypes_epochs`` epochs the prototypes get no update (the CAMERA tree's epoch-0
    freeze); they are re-normalised before every forward.

    Parameters
    ----------
    num_prototypes : int, default=1024
    student_temp, sinkhorn_eps, sinkhorn_iters : default=0.1, 0.05, 2
    cra_temperature : float, default=0.7
    num_negatives : int or None, default=512
        CRA top-k, capped at each batch's non-self pool ``(B - 1) * n`` (batches are often
        smaller than the reference's 128).
    context_weight : float, default=0.5
        Weight of the two context terms of the SelfAlign similarity.
    margin : float, default=0.2
    lca_weight, cra_weight : float, default=1.0
    freeze_prototypes_epochs : int, default=1
    mask_padding : bool, default=True
        Padded tokens are excluded from CRA, the context heads and the means. ``False`` is the
        reference (padding counted as locals and in the means).
    context_relu : bool, default=True
        ReLU in the context heads, on the locals and the global projection alike (the
        reference's ``ctx_relu`` switch).
    head : HeadConfig, optional
        Only ``embed_dim`` applies (default 256); other head fields raise.
    training : TrainingConfig, optional
        Default ``TrainingConfig(lr=2e-4, weight_decay=0.0)``.

    Notes
    -----
    The encoders of the reference (CAMERA, VSRN) normalise token tensors over the token axis;
    here every normalisation is over the feature axis. Exported embeddings are the
    concatenations whose dot products equal the SelfAlign score.
    """

    feature_kind: ClassVar[str] = "token"
    default_training: ClassVar[TrainingConfig] = TrainingConfig(lr=2e-4, weight_decay=0.0)
    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "num_prototypes": Interval(int, 2),
        "student_temp": Interval(float, 0.0, closed="neither"),
        "sinkhorn_eps": Interval(float, 0.0, closed="neither"),
        "sinkhorn_iters": Interval(int, 1),
        "cra_temperature": Interval(float, 0.0, closed="neither"),
        "num_negatives": [None, Interval(int, 1)],
        "context_weight": Interval(float, 0.0),
        "margin": Interval(float, 0.0),
        "lca_weight": Interval(float, 0.0),
        "cra_weight": Interval(float, 0.0),
        "freeze_prototypes_epochs": Interval(int, 0),
        "mask_padding": bool,
        "context_relu": bool,
    }

    def __init__(
        self,
        *,
        num_prototypes: int = 1024,
        student_temp: float = 0.1,
        sinkhorn_eps: float = 0.05,
        sinkhorn_iters: int = 2,
        cra_temperature: float = 0.7,
        num_negatives: int | None = 512,
        context_weight: float = 0.5,
        margin: float = 0.2,
        lca_weight: float = 1.0,
        cra_weight: float = 1.0,
        freeze_prototypes_epochs: int = 1,
        mask_padding: bool = True,
        context_relu: bool = True,
        head: HeadConfig | None = None,
        training: TrainingConfig | None = None,
    ) -> None:
        self.num_prototypes = num_prototypes
        self.student_temp = student_temp
        self.sinkhorn_eps = sinkhorn_eps
        self.sinkhorn_iters = sinkhorn_iters
        self.cra_temperature = cra_temperature
        self.num_negatives = num_negatives
        self.context_weight = context_weight
        self.margin = margin
        self.lca_weight = lca_weight
        self.cra_weight = cra_weight
        self.freeze_prototypes_epochs = freeze_prototypes_epochs
        self.mask_padding = mask_padding
        self.context_relu = context_relu
        self.head = head
        self.training = training

    def _check_head(self, head: HeadConfig) -> None:
        """SelfAlign's heads are fixed (a linear token projection and two context heads): only
        ``embed_dim`` can change; any other head field raises instead of being ignored."""
        if head.kinds != ("linear", "linear"):
            raise InvalidParameterError(
                f"SelfAlignTrainer: its token projection is a linear head; got head kinds {head.kinds}. "
                "Leave kind/text_kind at 'linear'."
            )
        head.check_applicable("SelfAlignTrainer", used=("kind", "text_kind", "embed_dim"))

    def _build_model(self, spec: dict[str, Any]) -> torch.nn.Module:
        return SelfAlignModel(
            spec["image_dim"],
            spec["text_dim"],
            self.head_config().embed_dim,
            self.num_prototypes,
            context_weight=self.context_weight,
            mask_padding=self.mask_padding,
            context_relu=self.context_relu,
        )

    def _batch_loss(self, model: torch.nn.Module, batch: dict[str, Any], epoch: int) -> Tensor:
        model.prototypes.normalize_()
        img = model.encode_images(**batch["image"], full=True)
        txt = model.encode_texts(**batch["text"], full=True)
        rank = self.rank_loss_(model.similarity(img, txt), pos_mask=batch["pos_mask"])
        lca = self.concept_loss_(
            img["concept"],
            txt["concept"],
            txt["mask"].sum(dim=1),
            model.prototypes.weight,
            region_mask=img["mask"],
        )
        img_mask, txt_mask = (img["mask"], txt["mask"]) if self.mask_padding else (None, None)
        ctx = 0.5 * self.context_loss_(img["locals"], txt["global"], local_mask=img_mask) + 0.5 * (
            self.context_loss_(txt["locals"], img["global"], local_mask=txt_mask)
        )
        return rank + self.lca_weight * lca + self.cra_weight * ctx

    def _before_step(self, model: torch.nn.Module, epoch: int) -> None:
        if epoch < self.freeze_prototypes_epochs:
            model.prototypes.freeze_grads()

    def _prepare(self, train: FeatureSet | None) -> None:
        self.rank_loss_ = VSEPPLoss(margin=self.margin)
        self.concept_loss_ = ConceptAlignmentLoss(
            student_temp=self.student_temp, eps=self.sinkhorn_eps, iters=self.sinkhorn_iters
        )
        self.context_loss_ = ContextAlignmentLoss(
            self.cra_temperature, num_negatives=self.num_negatives, clip_negatives=True
        )
