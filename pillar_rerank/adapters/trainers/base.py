"""Shared trainer machinery: parameters, seeding, the batch loop, dev-RSUM selection, model
folders and the score export that ``rerank fit/apply/eval`` read.

One class holds the whole trainer life cycle (fit, encode/score, export, save/load), so a subclass
reads in one place which hooks it may override; reading model folders is in :mod:`.folders`.

A trainer is scikit-learn-like: the constructor stores its keyword arguments unchanged, ``fit``
returns ``self`` and sets ``model_``, ``history_``, ``best_epoch_``, ``best_dev_rsum_``. A
subclass supplies the model (``_build_model``) and the loss of one batch (``_batch_loss``); the
model exposes ``encode_images``, ``encode_texts``, ``similarity`` and ``item_embeddings``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from pillar_rerank.adapters.config import HeadConfig, TrainingConfig
from pillar_rerank.adapters.features import FeatureSet
from pillar_rerank.adapters.trainers.export import write_scores
from pillar_rerank.adapters.trainers.folders import MODEL_KIND, check_replaceable, read_trainer_folder
from pillar_rerank.base import ParamsMixin
from pillar_rerank.checkpoint import save_model_dir
from pillar_rerank.exceptions import (
    CheckpointError,
    InvalidInputError,
    InvalidParameterError,
    NotFittedError,
)
from pillar_rerank.metrics import recall_metrics
from pillar_rerank.utils import resolve_device, seed_everything

logger = logging.getLogger(__name__)


def batch_positive_mask(images: Tensor) -> Tensor:
    """``[B, B]`` mask of batch pairs whose captions belong to the same image."""
    return images[:, None] == images[None, :]


def to_tensor(array: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.as_tensor(np.asarray(array), dtype=dtype, device=device)


class BaseTrainer(ParamsMixin):
    """Base class of the backbone trainers (see module docstring).

    Every trainer takes ``head`` (a :class:`~pillar_rerank.adapters.config.HeadConfig`) and
    ``training`` (a :class:`~pillar_rerank.adapters.config.TrainingConfig`) whole; ``None`` means
    the class's ``default_head`` / ``default_training``. Head fields the trainer's model cannot
    use raise at validation instead of being dropped.
    """

    #: head and training configuration used when the constructor gets ``None``
    default_head: ClassVar[HeadConfig] = HeadConfig()
    default_training: ClassVar[TrainingConfig] = TrainingConfig()
    _parameter_constraints: ClassVar[dict[str, Any]] = {}
    #: features the trainer needs: "vector" (n, d) or "token" (n, N, d)
    feature_kind: ClassVar[str] = "any"

    def _constraints(self) -> dict[str, Any]:
        return {"head": [None, HeadConfig], "training": [None, TrainingConfig], **self._parameter_constraints}

    def head_config(self) -> HeadConfig:
        """The head configuration in use (``head``, else the class default)."""
        return self.head if self.head is not None else self.default_head

    def training_config(self) -> TrainingConfig:
        """The training configuration in use (``training``, else the class default)."""
        return self.training if self.training is not None else self.default_training

    def _validate_params(self) -> None:
        super()._validate_params()
        owner = type(self).__name__
        self.training_config().validate(owner)
        self.head_config().validate(owner)
        self._check_head(self.head_config())

    def _check_head(self, head: HeadConfig) -> None:
        """Raise on head fields this trainer's model would not use (default: by head kind)."""
        head.check_applicable(type(self).__name__)

    def _json_params(self) -> dict[str, Any]:
        out = {}
        for k, v in self.get_params().items():
            if isinstance(v, (HeadConfig, TrainingConfig)):
                v = v.to_dict()
            out[k] = str(v) if isinstance(v, Path) else v
        return out

    @classmethod
    def _params_from_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments from saved parameters (the flat form of the previous version too)."""
        params = dict(params)
        if "head" not in params or isinstance(params.get("head"), str):  # previous version: flat
            head = {"kind": params.pop("head", None), "text_kind": params.pop("text_head", None)}
            head = {k: v for k, v in head.items() if v is not None}
            for name in HeadConfig.field_names():
                if name in params:
                    head[name] = params.pop(name)
            training = {name: params.pop(name) for name in TrainingConfig.field_names() if name in params}
            params["head"] = head or None
            params["training"] = training or None
        unknown = sorted(set(params) - set(cls._param_names()))
        if unknown:
            raise CheckpointError(f"{cls.__name__} config: unknown parameter(s) {unknown!r}.")
        try:
            if params.get("head") is not None:
                params["head"] = HeadConfig.from_dict(params["head"], base=cls.default_head)
            if params.get("training") is not None:
                params["training"] = TrainingConfig.from_dict(params["training"], base=cls.default_training)
        except InvalidParameterError as exc:
            raise CheckpointError(f"{cls.__name__} config: {exc}") from exc
        return params

    def _check_is_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit() or load() first."
            )

    # ------------------------------------------------------------------ subclass hooks
    def _build_model(self, spec: dict[str, Any]) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _batch_loss(
        self, model: torch.nn.Module, batch: dict[str, Tensor], epoch: int
    ) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _extra_parameters(self) -> list[torch.nn.Parameter]:
        """Trainable parameters outside the model (e.g. a learnable logit scale)."""
        return []

    def _before_step(self, model: torch.nn.Module, epoch: int) -> None:
        """Called after ``backward`` and clipping, before the optimiser step."""

    def _prepare(self, train: FeatureSet) -> None:
        """Per-fit set-up from the training side (e.g. build the loss)."""

    # ------------------------------------------------------------------ data
    def _check_features(self, data: FeatureSet, *, role: str) -> FeatureSet:
        if not isinstance(data, FeatureSet):
            raise TypeError(f"{type(self).__name__}: {role} must be a FeatureSet; got {type(data).__name__}.")
        if self.feature_kind == "vector" and data.token_level:
            raise InvalidInputError(
                f"{type(self).__name__}: {role} features are token-level (n, N, d); this "
                "trainer needs one vector per item (n, d)."
            )
        if self.feature_kind == "token" and (
            np.ndim(data.image_features) != 3 or np.ndim(data.text_features) != 3
        ):
            raise InvalidInputError(
                f"{type(self).__name__}: {role} features must be token-level (n, N, d) on "
                f"both sides; got {np.shape(data.image_features)} and "
                f"{np.shape(data.text_features)}."
            )
        if hasattr(self, "model_spec_") and role != "train":
            spec = self.model_spec_
            if (
                np.shape(data.image_features)[-1] != spec["image_dim"]
                or np.shape(data.text_features)[-1] != spec["text_dim"]
            ):
                raise InvalidInputError(
                    f"{type(self).__name__}: {role} features have dims ({np.shape(data.image_features)[-1]}, "
                    f"{np.shape(data.text_features)[-1]}); the model was trained on ({spec['image_dim']}, "
                    f"{spec['text_dim']})."
                )
        return data

    @staticmethod
    def _spec_from(data: FeatureSet) -> dict[str, Any]:
        return {
            "image_dim": int(np.shape(data.image_features)[-1]),
            "text_dim": int(np.shape(data.text_features)[-1]),
            "token_level": bool(data.token_level),
        }

    def _side_tensors(
        self, data: FeatureSet, side: str, items: np.ndarray, device: torch.device
    ) -> dict[str, Tensor]:
        feats = data.image_features if side == "image" else data.text_features
        lengths = data.image_lengths if side == "image" else data.text_lengths
        out = {"x": to_tensor(np.asarray(feats[items]), device)}
        if lengths is not None:
            lens = torch.as_tensor(lengths[items], device=device)
            out["mask"] = torch.arange(out["x"].shape[1], device=device)[None, :] < lens[:, None]
        return out

    def _make_batch(self, data: FeatureSet, captions: np.ndarray, device: torch.device) -> dict[str, Any]:
        images = data.relevance.txt_to_img[captions]
        batch = {
            "captions": captions,
            "images": images,
            "image": self._side_tensors(data, "image", images, device),
            "text": self._side_tensors(data, "text", captions, device),
            "pos_mask": batch_positive_mask(torch.as_tensor(images, device=device)),
        }
        return batch

    # ------------------------------------------------------------------ training
    def fit(self, train: FeatureSet, dev: FeatureSet | None = None) -> BaseTrainer:
        """Train on ``train``; keep the epoch with the best dev RSUM (the last epoch without dev)."""
        self._validate_params()
        cfg = self.training_config()
        train = self._check_features(train, role="train")
        if dev is not None:
            dev = self._check_features(dev, role="dev")
        device = resolve_device(cfg.device)
        generator = seed_everything(cfg.seed)
        self.model_spec_ = self._spec_from(train)
        if dev is not None:
            self._check_features(dev, role="dev")  # now also against the model's input dims
        self._prepare(train)
        model = self._build_model(self.model_spec_).to(device)
        params = [p for p in model.parameters() if p.requires_grad] + self._extra_parameters()
        for p in self._extra_parameters():
            p.data = p.data.to(device)
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = (
            torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_update, gamma=0.1) if cfg.lr_update else None
        )
        n = train.n_texts
        steps_per_epoch = max(1, n // cfg.batch_size) if n >= cfg.batch_size else 1
        history: list[dict[str, Any]] = []
        best_rsum, best_state, best_epoch = -math.inf, None, -1
        self.model_ = model
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(n, generator=generator).numpy()
            batches = [order[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(steps_per_epoch)]
            batches = [b for b in batches if b.shape[0] >= 2]
            iterator = batches
            if cfg.verbose:
                from tqdm.auto import tqdm

                iterator = tqdm(
                    batches, desc=f"{type(self).__name__} epoch {epoch + 1}/{cfg.epochs}", leave=False
                )
            start, losses = time.perf_counter(), []
            for captions in iterator:
                batch = self._make_batch(train, captions, device)
                loss = self._batch_loss(model, batch, epoch)
                if not torch.isfinite(loss):
                    raise InvalidInputError(
                        f"{type(self).__name__}: the loss became {float(loss)} at epoch "
                        f"{epoch + 1}; lower lr or check the features."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                self._before_step(model, epoch)
                optimizer.step()
                losses.append(float(loss.detach()))
            if scheduler is not None:
                scheduler.step()
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "seconds": round(time.perf_counter() - start, 3),
            }
            if dev is not None:
                metrics = self.evaluate(dev)
                record.update({f"dev_{k}": v for k, v in metrics.items() if "R@" in k or k == "RSUM"})
                if metrics["RSUM"] > best_rsum:
                    best_rsum, best_epoch = metrics["RSUM"], epoch + 1
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    if cfg.checkpoint_dir is not None:
                        self.best_epoch_, self.best_dev_rsum_, self.history_ = (
                            best_epoch,
                            best_rsum,
                            history + [record],
                        )
                        self.save(cfg.checkpoint_dir, overwrite=True)
            history.append(record)
            logger.info(
                "%s epoch %d/%d: loss %.4f%s",
                type(self).__name__,
                epoch + 1,
                cfg.epochs,
                record["loss"],
                f", dev RSUM {record['dev_RSUM']:.2f}" if dev is not None else "",
            )
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            best_epoch, best_rsum = cfg.epochs, (history[-1].get("dev_RSUM") if history else None)
        model.eval()
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.best_dev_rsum_ = None if best_rsum in (None, -math.inf) else float(best_rsum)
        return self

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def encode(self, data: FeatureSet) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Encode every image and every caption of ``data`` (in batches); returns the two representations."""
        self._check_is_fitted()
        data = self._check_features(data, role="data")
        model = self.model_
        model.eval()
        batch = self.training_config().eval_batch_size
        device = next(iter(model.parameters()), torch.empty(0)).device
        out = []
        for side, n, encode in (
            ("image", data.n_images, model.encode_images),
            ("text", data.n_texts, model.encode_texts),
        ):
            parts = [
                encode(**self._side_tensors(data, side, np.arange(s, min(s + batch, n)), device))
                for s in range(0, n, batch)
            ]
            out.append({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
        return out[0], out[1]

    @torch.no_grad()
    def score(self, data: FeatureSet) -> np.ndarray:
        """The image x text score matrix of ``data``, float32, computed in image blocks."""
        return self._score_encoded(*self.encode(data))

    @torch.no_grad()
    def _score_encoded(self, img: dict[str, Tensor], txt: dict[str, Tensor]) -> np.ndarray:
        model = self.model_
        n_images, n_texts = next(iter(img.values())).shape[0], next(iter(txt.values())).shape[0]
        block = max(1, int(model.score_block_rows(n_texts)))
        scores = np.empty((n_images, n_texts), dtype=np.float32)
        for s in range(0, n_images, block):
            part = {k: v[s : s + block] for k, v in img.items()}
            scores[s : s + block] = model.similarity(part, txt).float().cpu().numpy()
        return scores

    def evaluate(self, data: FeatureSet) -> dict[str, float]:
        """Recall@1/5/10 of both directions and RSUM on ``data``."""
        return recall_metrics(self.score(data), data.relevance)

    # ------------------------------------------------------------------ export
    def export_scores(
        self,
        out_dir: str | Path,
        data: FeatureSet,
        *,
        overwrite: bool = False,
        evaluate: bool = True,
        inputs: tuple = (),
    ) -> dict[str, Any]:
        """Write the files ``rerank fit/apply/eval`` read, plus a JSON manifest; returns the manifest.

        Files: ``sims.npy`` (image x text float32), ``txt2img.npy`` (int64), ``image_emb.npy`` and
        ``text_emb.npy`` (float32, when the model has one vector per item whose dot products are
        the scores) and ``manifest.json``. Each file is written atomically and never over an input.
        """
        return write_scores(self, out_dir, data, overwrite=overwrite, evaluate=evaluate, inputs=inputs)

    # ------------------------------------------------------------------ model folder
    def save(self, path: str | Path, *, overwrite: bool = False, inputs: tuple = ()) -> Path:
        """Write the fitted trainer as a model folder of the package's format (atomic, checksummed).

        ``weights.safetensors`` holds the model (and, under ``extra``, parameters outside it such
        as a learnable logit scale); ``config.json`` the class, parameters, model spec and history.
        See :func:`pillar_rerank.checkpoint.save_model_dir`: an existing folder is replaced only
        with ``overwrite`` and only when it is a model folder of ours.
        """
        self._check_is_fitted()
        check_replaceable(path)
        state = {k: v.detach() for k, v in self.model_.state_dict().items()}
        extra = {f"extra.{i}": p.detach() for i, p in enumerate(self._extra_parameters())}
        config = {
            "kind": MODEL_KIND,
            "class": type(self).__name__,
            "params": self._json_params(),
            "model_spec": self.model_spec_,
            "history": getattr(self, "history_", []),
            "best_epoch": getattr(self, "best_epoch_", None),
            "best_dev_rsum": getattr(self, "best_dev_rsum_", None),
        }
        return Path(
            save_model_dir(
                path,
                state_dict=state,
                config=config,
                overwrite=overwrite,
                extra={"extra": extra} if extra else None,
                inputs=inputs,
            )
        )

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> BaseTrainer:
        """Rebuild a fitted trainer from :meth:`save`'s folder, or from a folder of the previous
        version (``model.safetensors`` + ``trainer.json``). Never unpickles."""
        state, config = read_trainer_folder(path)
        if config.get("class") != cls.__name__:
            raise CheckpointError(
                f"model folder ({path}): holds a {config.get('class')!r}, not a {cls.__name__}."
            )
        for key in ("params", "model_spec"):
            if not isinstance(config.get(key), dict):
                raise CheckpointError(
                    f"model folder ({path}): config field {key!r} is missing or not an object."
                )
        params = cls._params_from_json(config["params"])
        if device is not None:
            params["training"] = (params.get("training") or cls.default_training).replace(device=device)
        trainer = cls(**params)
        try:
            trainer._validate_params()
        except InvalidParameterError as exc:
            raise CheckpointError(f"model folder ({path}): {exc}") from exc
        trainer.model_spec_ = config["model_spec"]
        trainer._prepare(None)
        model = trainer._build_model(trainer.model_spec_)
        extra = {k: v for k, v in state.items() if k.startswith("extra.")}
        try:
            model.load_state_dict({k: v for k, v in state.items() if not k.startswith("extra.")}, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"model folder ({path}): weights do not match the saved config ({exc})."
            ) from exc
        for i, p in enumerate(trainer._extra_parameters()):
            if f"extra.{i}" in extra:
                p.data.copy_(extra[f"extra.{i}"])
        trainer.model_ = model.to(resolve_device(trainer.training_config().device)).eval()
        trainer.history_ = config.get("history", [])
        trainer.best_epoch_ = config.get("best_epoch")
        trainer.best_dev_rsum_ = config.get("best_dev_rsum")
        return trainer
