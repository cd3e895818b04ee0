"""Shared trainer machinery: parameters, seeding, the batch loop, dev-RSUM selection, checkpoints
and the score export that ``rerank fit/apply/eval`` read.

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

from pillar_rerank._validation import Interval
from pillar_rerank.adapters.features import FeatureSet
from pillar_rerank.adapters.trainers._checkpoint import FORMAT_VERSION, CheckpointMixin
from pillar_rerank.base import ParamsMixin
from pillar_rerank.exceptions import InputFileError, InvalidInputError, NotFittedError
from pillar_rerank.io import save_array, save_json
from pillar_rerank.metrics import recall_metrics
from pillar_rerank.utils import resolve_device, seed_everything

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"

COMMON_CONSTRAINTS: dict[str, Any] = {
    "epochs": Interval(int, 1),
    "batch_size": Interval(int, 2),
    "lr": Interval(float, 0.0, closed="neither"),
    "weight_decay": Interval(float, 0.0),
    "grad_clip": [None, Interval(float, 0.0, closed="neither")],
    "lr_update": [None, Interval(int, 1)],
    "seed": Interval(int, 0),
    "device": [None, str],
    "verbose": bool,
    "checkpoint_dir": [None, str, Path],
    "eval_batch_size": Interval(int, 1),
}


def batch_positive_mask(images: Tensor) -> Tensor:
    """``[B, B]`` mask of batch pairs whose captions belong to the same image."""
    return images[:, None] == images[None, :]


def to_tensor(array: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.as_tensor(np.asarray(array), dtype=dtype, device=device)


class BaseTrainer(ParamsMixin, CheckpointMixin):
    """Base class of the backbone trainers (see module docstring).

    Common parameters
    -----------------
    epochs : int
    batch_size : int
        Captions per step; their images form the other side of the B x B batch matrix (an image
        sampled twice is a positive of both captions, never a negative). Captions are reshuffled
        every epoch and the last incomplete batch is dropped.
    lr, weight_decay, grad_clip : float
        AdamW; gradient-norm clip (``None`` disables).
    lr_update : int or None
        Multiply the learning rate by 0.1 every this many epochs (``None``: constant).
    seed : int
    device : str or None
        ``None``: CUDA when available, else CPU.
    verbose : bool
        tqdm progress bar and per-epoch log lines at INFO.
    checkpoint_dir : str or None
        Save the best model so far there (atomically) after every improving epoch.
    eval_batch_size : int
        Items encoded per forward pass when scoring a whole side.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {}
    #: features the trainer needs: "vector" (n, d) or "token" (n, N, d)
    feature_kind: ClassVar[str] = "any"

    def _constraints(self) -> dict[str, Any]:
        return {**COMMON_CONSTRAINTS, **self._parameter_constraints}

    def _json_params(self) -> dict[str, Any]:
        out = {}
        for k, v in self.get_params().items():
            out[k] = str(v) if isinstance(v, Path) else v
        return out

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
        train = self._check_features(train, role="train")
        if dev is not None:
            dev = self._check_features(dev, role="dev")
        device = resolve_device(self.device)
        generator = seed_everything(self.seed)
        self.model_spec_ = self._spec_from(train)
        if dev is not None:
            self._check_features(dev, role="dev")  # now also against the model's input dims
        self._prepare(train)
        model = self._build_model(self.model_spec_).to(device)
        params = [p for p in model.parameters() if p.requires_grad] + self._extra_parameters()
        for p in self._extra_parameters():
            p.data = p.data.to(device)
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        scheduler = (
            torch.optim.lr_scheduler.StepLR(optimizer, self.lr_update, gamma=0.1) if self.lr_update else None
        )
        n = train.n_texts
        steps_per_epoch = max(1, n // self.batch_size) if n >= self.batch_size else 1
        history: list[dict[str, Any]] = []
        best_rsum, best_state, best_epoch = -math.inf, None, -1
        self.model_ = model
        for epoch in range(self.epochs):
            model.train()
            order = torch.randperm(n, generator=generator).numpy()
            batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(steps_per_epoch)]
            batches = [b for b in batches if b.shape[0] >= 2]
            iterator = batches
            if self.verbose:
                from tqdm.auto import tqdm

                iterator = tqdm(
                    batches, desc=f"{type(self).__name__} epoch {epoch + 1}/{self.epochs}", leave=False
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
                if self.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
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
                    if self.checkpoint_dir is not None:
                        self.best_epoch_, self.best_dev_rsum_, self.history_ = (
                            best_epoch,
                            best_rsum,
                            history + [record],
                        )
                        self.save(self.checkpoint_dir, overwrite=True)
            history.append(record)
            logger.info(
                "%s epoch %d/%d: loss %.4f%s",
                type(self).__name__,
                epoch + 1,
                self.epochs,
                record["loss"],
                f", dev RSUM {record['dev_RSUM']:.2f}" if dev is not None else "",
            )
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            best_epoch, best_rsum = self.epochs, (history[-1].get("dev_RSUM") if history else None)
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
        device = next(iter(model.parameters()), torch.empty(0)).device
        out = []
        for side, n, encode in (
            ("image", data.n_images, model.encode_images),
            ("text", data.n_texts, model.encode_texts),
        ):
            parts = [
                encode(
                    **self._side_tensors(data, side, np.arange(s, min(s + self.eval_batch_size, n)), device)
                )
                for s in range(0, n, self.eval_batch_size)
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
        self._check_is_fitted()
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputFileError(f"export folder ({out}): exists and is not a folder.")
        out.mkdir(parents=True, exist_ok=True)
        img, txt = self.encode(data)
        scores = self._score_encoded(img, txt)
        files = {"sims": "sims.npy", "txt2img": "txt2img.npy"}
        save_array(out / files["sims"], scores, inputs=inputs, overwrite=overwrite, name="sims")
        save_array(
            out / files["txt2img"],
            data.relevance.txt_to_img.astype(np.int64),
            inputs=inputs,
            overwrite=overwrite,
            name="txt2img",
        )
        embeddings = self.model_.item_embeddings(img, txt)
        if embeddings is not None:
            files["image_emb"], files["text_emb"] = "image_emb.npy", "text_emb.npy"
            save_array(
                out / files["image_emb"],
                embeddings[0].float().cpu().numpy(),
                inputs=inputs,
                overwrite=overwrite,
                name="image_emb",
            )
            save_array(
                out / files["text_emb"],
                embeddings[1].float().cpu().numpy(),
                inputs=inputs,
                overwrite=overwrite,
                name="text_emb",
            )
        manifest = {
            "format_version": FORMAT_VERSION,
            "producer": f"pillar_rerank.adapters.{type(self).__name__}",
            "files": files,
            "n_images": data.n_images,
            "n_texts": data.n_texts,
            "data": data.name,
            "orientation": "sims[i, j] = score of image i against caption j",
            "trainer": {
                "class": type(self).__name__,
                "params": self._json_params(),
                "best_epoch": self.best_epoch_,
                "best_dev_rsum": self.best_dev_rsum_,
            },
            "metrics": recall_metrics(scores, data.relevance) if evaluate else None,
            "usage": f"rerank eval {out / files['sims']} --txt2img {out / files['txt2img']}",
        }
        save_json(out / MANIFEST_FILE, manifest, inputs=inputs, overwrite=overwrite, name="manifest")
        return manifest
