"""The LeaPRR training loop: SGD + momentum, per-iteration cosine decay, dev selection, resume.

One dataset item is one caption ``j`` (as in the reference): its text query, the image query of
its image, and both mapped lists (spec §7.3, §8). Image queries repeated within a batch are
scored once and their scores gathered back, so the loss keeps one image-query term per item.

Resumable state (written atomically, no pickle): model, optimiser momentum buffers, best
weights, the data generator's state, the current epoch's permutation, epoch/iteration, history.
A run killed at any point and resumed ends with the same weights, bitwise, on CPU.

Under ``torchrun`` (see :mod:`pillar_rerank.distributed`) ``batch_size`` is the global batch:
every rank draws the same order and mapped lists, trains on its contiguous share, and gradients
are summed over ranks, so the result equals one process up to floating-point rounding. Rank 0
validates (the figures are broadcast, so every rank selects the same weights) and writes
checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pillar_rerank import distributed
from pillar_rerank.checkpoint import SimulatedCrash, TrainingCheckpoint
from pillar_rerank.config import LeaPRRConfig
from pillar_rerank.exceptions import CheckpointError, InvalidParameterError
from pillar_rerank.losses import LeaPRRLoss
from pillar_rerank.model.network import MutualRerankNetwork
from pillar_rerank.utils.device import autocast

logger = logging.getLogger(__name__)

#: Offset between the initialisation seed and the data-order/caption-sampling seed.
DATA_SEED_OFFSET = 1_000_003
#: Steps timed before the run-time estimate is shown.
PROBE_STEPS = 3


def cosine_lr(base_lr: float, step: int, total: int) -> float:
    """Cosine decay from ``base_lr`` at step 0 towards 0 at ``total`` (no warm-up)."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * step / max(1, total)))


class Trainer:
    """Runs :meth:`run` for one fit; holds no state between fits."""

    def __init__(
        self,
        config: LeaPRRConfig,
        *,
        device: torch.device,
        train,
        txt_to_img: np.ndarray,
        validate: Callable[[MutualRerankNetwork], dict[str, float]] | None,
        verbose: bool,
        fingerprint: dict[str, Any],
    ) -> None:
        self.cfg = config
        self.device = device
        self.train = train
        self.txt_to_img = torch.tensor(np.asarray(txt_to_img), dtype=torch.long)
        self.validate_fn = validate
        self.verbose = verbose
        self.fingerprint = fingerprint
        self.loss_fn = LeaPRRLoss.from_config(config.loss)
        self.loss_fn_part_names = [
            f"{term}_{d}"
            for d, terms in {
                "i2t": ("contrastive", "hinge", "triplet"),
                "t2i": ("contrastive", "hinge", "triplet"),
                "t2i_map": ("contrastive", "hinge"),
                "i2t_map": ("contrastive", "hinge"),
            }.items()
            for term in terms
        ] + ["kl_i2t", "kl_t2i"]

    # ---------------------------------------------------------------- one step
    def _step(
        self,
        model: MutualRerankNetwork,
        optimizer: torch.optim.Optimizer,
        ids: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[float, dict[str, float]]:
        images = self.txt_to_img[ids]
        unique, inverse = torch.unique(images, return_inverse=True)
        dev = self.device
        img_unique = self.train.image_lists(unique)
        img_items = img_unique[inverse]  # one image-query list per item (loss semantics)
        txt_lists = self.train.text_lists(ids)
        # Under torchrun every rank builds the lists of the whole global batch (same generator
        # state, so the same mapped-list draws as one process) and keeps its contiguous share.
        t2i_map, i2t_map = self.train.mapped_lists(
            ids, generator, image_lists=img_items, text_lists=txt_lists
        )
        n_global = int(ids.shape[0])
        weight = 1.0
        if distributed.is_distributed():
            world, rank = distributed.world(), distributed.rank()
            lo, hi = rank * n_global // world, (rank + 1) * n_global // world
            weight = (hi - lo) / n_global  # local mean x weight, summed over ranks = global mean
            images = images[lo:hi]
            unique, inverse = torch.unique(images, return_inverse=True)
            img_unique = self.train.image_lists(unique) if hi > lo else None
            img_items, txt_lists = img_items[lo:hi], txt_lists[lo:hi]
            t2i_map, i2t_map = t2i_map[lo:hi], i2t_map[lo:hi]
            if hi == lo:
                return self._reduce_and_update(model, optimizer, None, {}, weight)
        img_unique, img_items, txt_lists = img_unique.to(dev), img_items.to(dev), txt_lists.to(dev)
        t2i_map, i2t_map = t2i_map.to(dev), i2t_map.to(dev)
        inverse = inverse.to(dev)
        with autocast(dev, self.cfg.precision, training=True):
            s_img = model.i2t.score_lists(img_unique)[inverse]
            s_txt = model.t2i.score_lists(txt_lists)
            s_t2i_map = model.t2i.score_lists(t2i_map)
            s_i2t_map = model.i2t.score_lists(i2t_map)
        total, parts = self.loss_fn(  # the losses in fp32
            i2t=(s_img.float(), img_items),
            t2i=(s_txt.float(), txt_lists),
            t2i_map=(s_t2i_map.float(), t2i_map),
            i2t_map=(s_i2t_map.float(), i2t_map),
        )
        if not distributed.is_distributed():
            value = float(total.detach())
            optimizer.zero_grad(set_to_none=True)
            if not math.isfinite(value):
                logger.warning("non-finite loss (%s); skipping this update", value)
                return value, parts
            total.backward()
            optimizer.step()
            return value, parts
        return self._reduce_and_update(model, optimizer, total, parts, weight)

    def _reduce_and_update(
        self,
        model: MutualRerankNetwork,
        optimizer: torch.optim.Optimizer,
        total: torch.Tensor | None,
        parts: dict[str, float],
        weight: float,
    ) -> tuple[float, dict[str, float]]:
        """Distributed update: the sum over ranks of ``weight x local mean loss`` is the global
        batch mean, so summing the gradients over ranks gives the single-process gradient."""
        names = sorted(self.loss_fn_part_names)
        local = torch.zeros(1 + len(names), dtype=torch.float64)
        if total is not None:
            local[0] = float(total.detach()) * weight
            for i, name in enumerate(names):
                local[1 + i] = parts[name] * weight
        reduced = distributed.all_reduce_sum(local.to(self.device)).cpu()
        value = float(reduced[0])
        parts = {name: float(reduced[1 + i]) for i, name in enumerate(names)}
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(value):  # the same decision on every rank
            logger.warning("non-finite loss (%s); skipping this update", value)
            return value, parts
        if total is not None:
            (total * weight).backward()
        grads = []
        for param in model.parameters():
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            grads.append(param.grad)
        flat = distributed.all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        optimizer.step()
        return value, parts

    # ---------------------------------------------------------------- state I/O
    def _save(
        self, ckpt: TrainingCheckpoint, model, optimizer, best_state, generator, perm, state: dict[str, Any]
    ) -> None:
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        if best_state is not None:
            tensors.update({f"best.{k}": v for k, v in best_state.items()})
        names = [n for n, _ in model.named_parameters()]
        for name, param in zip(names, model.parameters()):
            buf = optimizer.state.get(param, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"momentum.{name}"] = buf
        tensors["rng.data"] = generator.get_state()
        if perm is not None:
            tensors["perm"] = perm
        ckpt.save(tensors, {**state, "fingerprint": self.fingerprint})

    def _load(self, ckpt: TrainingCheckpoint, model, optimizer, generator):
        tensors, state = ckpt.load()
        if state.get("fingerprint") != self.fingerprint:
            raise CheckpointError(
                f"checkpoint dir ({ckpt.directory}): it belongs to another training run (different data "
                "or config); use a fresh checkpoint dir or the original inputs."
            )
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
        names = [n for n, _ in model.named_parameters()]
        opt_state = optimizer.state_dict()
        opt_state["state"] = {
            i: {"momentum_buffer": tensors[f"momentum.{n}"].to(self.device)}
            for i, n in enumerate(names)
            if f"momentum.{n}" in tensors
        }
        optimizer.load_state_dict(opt_state)
        generator.set_state(tensors["rng.data"])
        perm = tensors.get("perm")
        return best, perm, state

    # ---------------------------------------------------------------- loop
    def run(
        self,
        *,
        checkpoint_dir=None,
        resume: bool = False,
        checkpoint_every: int,
        crash_at_step: int | None = None,
    ) -> tuple[MutualRerankNetwork, dict[str, Any]]:
        cfg = self.cfg
        self.device = distributed.setup(self.device)
        if distributed.is_distributed() and cfg.batch_size % distributed.world() != 0:
            raise InvalidParameterError(
                f"batch_size ({cfg.batch_size}) is the global batch and must be divisible by the "
                f"number of processes ({distributed.world()}) under torchrun."
            )
        main = distributed.is_main()
        init_gen = torch.Generator().manual_seed(cfg.seed)
        model = MutualRerankNetwork.from_config(cfg, generator=init_gen).to(self.device).train()
        optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        generator = torch.Generator().manual_seed(cfg.seed + DATA_SEED_OFFSET)
        n_items = int(self.txt_to_img.shape[0])
        per_epoch = math.ceil(n_items / cfg.batch_size)
        total = per_epoch * cfg.epochs
        ckpt = TrainingCheckpoint(checkpoint_dir) if checkpoint_dir is not None else None

        epoch, it, step = 0, 0, 0
        perm: torch.Tensor | None = None
        best_state: dict[str, torch.Tensor] | None = None
        best_rsum = -math.inf
        history: dict[str, Any] = {"validations": [], "epochs": [], "skipped_steps": 0}
        epoch_sums: dict[str, float] = {}
        epoch_count = 0
        if ckpt is not None and main:
            ckpt.remove_stale_temporaries()
        distributed.barrier()
        if resume and ckpt is None:
            raise CheckpointError("resume=True needs a checkpoint dir.")
        if resume and ckpt.is_empty():
            logger.warning(
                "resume: no checkpoint in %s yet (none written before the run stopped); "
                "starting from scratch",
                checkpoint_dir,
            )
            resume = False
        if resume:
            best_state, perm, state = self._load(ckpt, model, optimizer, generator)
            epoch, it, step = state["epoch"], state["iteration"], state["global_step"]
            best_rsum = state["best_rsum"] if state["best_rsum"] is not None else -math.inf
            history = state["history"]
            epoch_sums, epoch_count = state["epoch_sums"], state["epoch_count"]
            logger.info("resuming at epoch %d, iteration %d (step %d of %d)", epoch, it, step, total)

        def evaluate(at_epoch: int) -> None:
            nonlocal best_state, best_rsum
            if self.validate_fn is None:
                return
            # Rank 0 validates; every rank receives the figures and makes the same selection.
            metrics = self.validate_fn(model) if main else None
            if distributed.is_distributed():
                metrics = distributed.broadcast_json(
                    None if metrics is None else {k: float(v) for k, v in metrics.items()},
                    device=self.device,
                )
            model.train()
            entry = {"step": step, "epoch": at_epoch, **{k: float(v) for k, v in metrics.items()}}
            history["validations"].append(entry)
            if metrics["RSUM"] > best_rsum:
                best_rsum = float(metrics["RSUM"])
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            logger.info("step %d: dev RSUM %.2f (best %.2f)", step, metrics["RSUM"], best_rsum)

        def save() -> None:
            if ckpt is None or not main:
                return
            state = {
                "epoch": epoch,
                "iteration": it,
                "global_step": step,
                "best_rsum": None if best_rsum == -math.inf else best_rsum,
                "history": history,
                "epoch_sums": epoch_sums,
                "epoch_count": epoch_count,
            }
            self._save(ckpt, model, optimizer, best_state, generator, perm, state)

        progress = _progress(total, step, self.verbose and main)
        running = None
        probe = _Probe(start_step=step, total=total, report=progress.write if progress is not None else None)
        try:
            while epoch < cfg.epochs:
                if perm is None:
                    perm = torch.randperm(n_items, generator=generator)
                while it < per_epoch:
                    if crash_at_step is not None and step == crash_at_step:
                        raise SimulatedCrash(f"simulated crash before step {step}")
                    for group in optimizer.param_groups:
                        group["lr"] = cosine_lr(cfg.lr, step, total)
                    ids = perm[it * cfg.batch_size : (it + 1) * cfg.batch_size]
                    loss, parts = self._step(model, optimizer, ids, generator)
                    if not math.isfinite(loss):
                        history["skipped_steps"] += 1
                    else:
                        for k, v in parts.items():
                            epoch_sums[k] = epoch_sums.get(k, 0.0) + v
                        epoch_sums["loss"] = epoch_sums.get("loss", 0.0) + loss
                        epoch_count += 1
                        running = loss if running is None else 0.9 * running + 0.1 * loss
                    it += 1
                    step += 1
                    probe.after(step)
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix(
                            loss=f"{running:.4f}" if running is not None else "nan", epoch=epoch + 1
                        )
                    end_of_epoch = it == per_epoch
                    if step % cfg.eval_every == 0 and not end_of_epoch:
                        evaluate(epoch)
                    if end_of_epoch:
                        evaluate(epoch)
                        history["epochs"].append(
                            {
                                "epoch": epoch,
                                "step": step,
                                **{k: v / max(1, epoch_count) for k, v in epoch_sums.items()},
                            }
                        )
                        epoch_sums, epoch_count = {}, 0
                        epoch, it, perm = epoch + 1, 0, None
                        save()
                        break
                    if step % checkpoint_every == 0:
                        save()
        finally:
            if progress is not None:
                progress.close()

        if self.validate_fn is None:
            logger.warning("no dev set given: keeping the weights of the last iteration")
            history["selected"] = "last"
        else:
            model.load_state_dict(best_state)
            history["selected"] = "best_dev_rsum"
            history["best_rsum"] = best_rsum
        return model.eval(), history


def _progress(total: int, initial: int, verbose: bool):
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="LeaPRR fit", unit="it", leave=False)


class _Probe:
    """Times the first :data:`PROBE_STEPS` steps and reports the estimated time of the rest."""

    def __init__(self, *, start_step: int, total: int, report) -> None:
        self.start_step, self.total, self.report = start_step, total, report
        self.t0 = time.perf_counter()

    def after(self, step: int) -> None:
        if step - self.start_step != PROBE_STEPS or step >= self.total:
            return
        per_step = (time.perf_counter() - self.t0) / PROBE_STEPS
        left = per_step * (self.total - step)
        message = (f"estimated training time: {format_duration(left)} for the remaining {self.total - step} "
                   f"steps ({per_step:.2f} s/step over the first {PROBE_STEPS}; dev evaluations not "
                   "included)")
        logger.info(message)
        if self.report is not None:
            self.report(message)


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"`` or ``"3.4 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
