"""Shrink: distil a fitted (frozen) teacher's batch scores into a smaller two-tower student."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from pillar_rerank._validation import Interval, Options
from pillar_rerank.adapters.config import HeadConfig, TrainingConfig
from pillar_rerank.adapters.features import FeatureSet
from pillar_rerank.adapters.losses.inflate_shrink import LOG_SOFTMAX_MODES, ScoreDistillationLoss
from pillar_rerank.adapters.trainers.base import BaseTrainer
from pillar_rerank.adapters.trainers.two_tower import TwoTowerTrainer
from pillar_rerank.exceptions import InvalidParameterError, NotFittedError


class ShrinkTrainer(TwoTowerTrainer):
    """Score distillation (Inflate & Shrink's shrinking) from a frozen teacher into a student.

    The optimiser holds the student's parameters only and the loss is the distillation term
    alone (no ground truth). The teacher is any fitted trainer of this module reading the same
    features; the student is a :class:`TwoTowerModel` built from the head parameters (e.g. a
    smaller ``embed_dim``, or ``n_out=1`` for token heads: the "fast" single vector).

    Parameters
    ----------
    teacher : BaseTrainer or None
        A fitted trainer; ``None`` only for a student loaded from disk (it can score and export,
        not be re-fitted).
    teacher_scale, student_scale : float, default=16
        ``(16, 16)`` for inflate -> base, ``(2, 16)`` for base -> fast.
    distill_reduction : {"sum", "mean"}, default="sum"
    log_softmax : {"stable", "reference"}, default="stable"
        See :class:`~pillar_rerank.adapters.losses.ScoreDistillationLoss`.
    head : HeadConfig, optional
        The student's heads (default ``HeadConfig(embed_dim=64)``; see :class:`TwoTowerTrainer`).
    training : TrainingConfig, optional
        Optimiser and loop (default ``TrainingConfig()``).
    """

    default_head: ClassVar[HeadConfig] = HeadConfig(embed_dim=64)
    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "teacher_scale": Interval(float, 0.0, closed="neither"),
        "student_scale": Interval(float, 0.0, closed="neither"),
        "distill_reduction": Options(frozenset({"sum", "mean"})),
        "log_softmax": Options(frozenset(LOG_SOFTMAX_MODES)),
    }

    def __init__(
        self,
        teacher: BaseTrainer | None,
        *,
        teacher_scale: float = 16.0,
        student_scale: float = 16.0,
        distill_reduction: str = "sum",
        log_softmax: str = "stable",
        head: HeadConfig | None = None,
        training: TrainingConfig | None = None,
    ) -> None:
        self.teacher = teacher
        self.teacher_scale = teacher_scale
        self.student_scale = student_scale
        self.distill_reduction = distill_reduction
        self.log_softmax = log_softmax
        self.head = head
        self.training = training

    def _prepare(self, train: FeatureSet | None) -> None:
        self.loss_fn_ = ScoreDistillationLoss(
            teacher_scale=self.teacher_scale,
            student_scale=self.student_scale,
            reduction=self.distill_reduction,
            log_softmax=self.log_softmax,
        )
        self._table = None
        if train is None:
            return
        if self.teacher is None:
            raise InvalidParameterError(
                "ShrinkTrainer: fit() needs a fitted teacher (teacher=None is only for "
                "a student loaded from disk)."
            )
        if not isinstance(self.teacher, BaseTrainer):
            raise TypeError(
                f"ShrinkTrainer: teacher must be a fitted trainer; got {type(self.teacher).__name__}."
            )
        if not hasattr(self.teacher, "model_"):
            raise NotFittedError(
                f"ShrinkTrainer: the teacher {type(self.teacher).__name__} is not fitted yet."
            )
        self.teacher._check_features(train, role="train (teacher)")
        for p in self.teacher.model_.parameters():
            p.requires_grad_(False)

    def _extra_parameters(self) -> list[torch.nn.Parameter]:
        return []

    def _batch_loss(self, model: torch.nn.Module, batch: dict[str, Any], epoch: int) -> Tensor:
        teacher = self.teacher.model_
        teacher.eval()
        with torch.no_grad():
            t_img = teacher.encode_images(**{k: v.to(_device_of(teacher)) for k, v in batch["image"].items()})
            t_txt = teacher.encode_texts(**{k: v.to(_device_of(teacher)) for k, v in batch["text"].items()})
            teacher_sims = teacher.similarity(t_img, t_txt)
        student_sims = model.similarity(
            model.encode_images(**batch["image"]), model.encode_texts(**batch["text"])
        )
        return self.loss_fn_(student_sims, teacher_sims=teacher_sims.to(student_sims.device))

    def _json_params(self) -> dict[str, Any]:
        params = super()._json_params()
        teacher = params.pop("teacher")
        params["teacher"] = (
            None if teacher is None else {"class": type(teacher).__name__, "params": teacher._json_params()}
        )
        return params

    @classmethod
    def _params_from_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        params["teacher"] = None  # the student is self-contained; the teacher is recorded, not restored
        return super()._params_from_json(params)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(iter(module.parameters()), torch.empty(0)).device
