"""The two configuration groups every adapter trainer takes whole: its heads and its training loop.

:class:`HeadConfig` describes the encoder heads (kind, joint dimension, MLP and token-head sizes);
:class:`TrainingConfig` the optimiser and the loop (AdamW, epochs, batches, seed, device). Both
are frozen dataclasses: one object is passed whole to a trainer, saved with its model as a plain
dict and read back by :meth:`from_dict`, which refuses unknown names. A trainer whose model
cannot use a head field (e.g. ``hidden_dim`` without an MLP head) raises instead of dropping it
(:meth:`HeadConfig.check_applicable`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from pillar_rerank._validation import Interval, Options, validate_params
from pillar_rerank.exceptions import InvalidParameterError

#: head kinds of :func:`pillar_rerank.adapters.heads.make_head`
HEAD_KINDS = ("identity", "linear", "mlp", "token")


class _Config:
    """Shared behaviour of the frozen config groups: validation, dict round trip, ``replace``."""

    _constraints: ClassVar[dict[str, Any]] = {}

    def validate(self, owner: str | None = None) -> None:
        """Check every field's type and range; the message names the field and the owner."""
        validate_params(dataclasses.asdict(self), self._constraints, owner=owner or type(self).__name__)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, base: _Config | None = None) -> _Config:
        """``base`` (default: the class defaults) with ``values`` replaced; unknown names raise."""
        if not isinstance(values, dict):
            raise InvalidParameterError(
                f"{cls.__name__}: expected a dict of fields; got {type(values).__name__}."
            )
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise InvalidParameterError(
                f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; "
                f"valid: {', '.join(cls.field_names())}."
            )
        return dataclasses.replace(base if base is not None else cls(), **values)

    def replace(self, **changes: Any) -> _Config:
        """A copy with ``changes`` applied (unknown names raise)."""
        return type(self).from_dict(changes, base=self)

    def changed_fields(self) -> list[str]:
        """Fields whose value differs from the class default."""
        default = type(self)()
        return [name for name in self.field_names() if getattr(self, name) != getattr(default, name)]


@dataclass(frozen=True)
class HeadConfig(_Config):
    """Encoder heads of a trainer.

    Parameters
    ----------
    kind : {"identity", "linear", "mlp", "token"}, default="linear"
        Image-side head (``"token"`` for token-level features).
    text_kind : str, optional
        Text-side head; default the same kind as ``kind``.
    embed_dim : int, default=256
        Joint dimension.
    hidden_dim : int, optional
        MLP hidden width (default ``embed_dim``); MLP heads only.
    dropout : float, default=0.1
        MLP dropout; MLP heads only.
    context_layers, num_codes : int, default=0
        Token heads only: self-attention layers and Inflate codes per modality.
    n_out : int, optional
        Token heads only: keep the first ``n_out`` output positions (1 = the "fast" single vector).
    """

    kind: str = "linear"
    text_kind: str | None = None
    embed_dim: int = 256
    hidden_dim: int | None = None
    dropout: float = 0.1
    context_layers: int = 0
    num_codes: int = 0
    n_out: int | None = None

    _constraints: ClassVar[dict[str, Any]] = {
        "kind": Options(frozenset(HEAD_KINDS)),
        "text_kind": [None, Options(frozenset(HEAD_KINDS))],
        "embed_dim": Interval(int, 1),
        "hidden_dim": [None, Interval(int, 1)],
        "dropout": Interval(float, 0.0, 1.0, closed="left"),
        "context_layers": Interval(int, 0),
        "num_codes": Interval(int, 0),
        "n_out": [None, Interval(int, 1)],
    }
    #: fields each head kind uses besides ``kind``/``text_kind``/``embed_dim``
    USES: ClassVar[dict[str, tuple[str, ...]]] = {
        "identity": (),
        "linear": (),
        "mlp": ("hidden_dim", "dropout"),
        "token": ("context_layers", "num_codes", "n_out"),
    }

    @property
    def kinds(self) -> tuple[str, str]:
        """``(image head kind, text head kind)``."""
        return self.kind, self.text_kind or self.kind

    def check_applicable(self, owner: str, *, used: tuple[str, ...] | None = None) -> None:
        """Raise when a field set away from its default is not used by the heads being built.

        ``used`` overrides the fields the heads use (a trainer with its own fixed heads).
        """
        if used is None:
            used = ("kind", "text_kind", "embed_dim") + tuple(
                name for kind in set(self.kinds) for name in self.USES.get(kind, ())
            )
        unused = [name for name in self.changed_fields() if name not in used]
        if unused:
            raise InvalidParameterError(
                f"{owner}: head field(s) {', '.join(unused)} do not apply to heads "
                f"{'/'.join(dict.fromkeys(self.kinds))} and would be ignored; remove them "
                f"(this trainer's heads use: {', '.join(used)})."
            )


@dataclass(frozen=True)
class TrainingConfig(_Config):
    """Optimiser and loop of a trainer.

    Parameters
    ----------
    epochs : int, default=10
    batch_size : int, default=128
        Captions per step; their images form the other side of the B x B batch matrix (an image
        sampled twice is a positive of both captions, never a negative). Captions are reshuffled
        every epoch and the last incomplete batch is dropped.
    lr, weight_decay : float, default=5e-4, 1e-4
        AdamW.
    grad_clip : float or None, default=2.0
        Gradient-norm clip (``None`` disables).
    lr_update : int or None
        Multiply the learning rate by 0.1 every this many epochs (``None``: constant).
    seed : int, default=0
    device : str or None
        ``None``: CUDA when available, else CPU.
    verbose : bool, default=False
        tqdm progress bar and per-epoch log lines at INFO.
    checkpoint_dir : str or None
        Save the best model so far there (a model folder, atomically) after every improving epoch.
    eval_batch_size : int, default=1024
        Items encoded per forward pass when scoring a whole side.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 1e-4
    grad_clip: float | None = 2.0
    lr_update: int | None = None
    seed: int = 0
    device: str | None = None
    verbose: bool = False
    checkpoint_dir: str | None = None
    eval_batch_size: int = 1024

    _constraints: ClassVar[dict[str, Any]] = {
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


__all__ = ["HEAD_KINDS", "HeadConfig", "TrainingConfig"]
