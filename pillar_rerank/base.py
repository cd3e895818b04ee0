"""Estimator contract shared by LeaPRR and every training-free method.

Constructors store their keyword arguments unchanged and do nothing else; ``fit`` returns
``self`` and sets learned attributes ending in ``_``; ``rerank`` returns a new score matrix and
never modifies its input. ``get_params()`` is exactly what is saved with a model.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, ClassVar

from pillar_rerank._validation import validate_params
from pillar_rerank.exceptions import InvalidParameterError, NotFittedError


class ParamsMixin:
    """Parameter handling read from ``__init__``'s signature: get/set, clone, repr, validation.

    Shared by the re-rankers (:class:`BaseReranker`) and the backbone trainers
    (``pillar_rerank.adapters.trainers.base.BaseTrainer``).
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {}

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must not take *args or **kwargs.")
            names.append(p.name)
        return sorted(names)

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, by name, exactly as stored."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> ParamsMixin:
        """Set constructor parameters (unknown names are an error); returns self."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise InvalidParameterError(
                    f"{type(self).__name__} has no parameter {name!r}; valid: {', '.join(sorted(valid))}."
                )
            setattr(self, name, value)
        return self

    def clone(self) -> ParamsMixin:
        """An unfitted copy with the same parameters."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def _constraints(self) -> dict[str, Any]:
        return dict(self._parameter_constraints)

    def _validate_params(self) -> None:
        validate_params(self.get_params(), self._constraints(), owner=type(self).__name__)

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
            if p.name != "self"
        }
        shown = [f"{k}={v!r}" for k, v in self.get_params().items() if k not in defaults or defaults[k] != v]
        return f"{type(self).__name__}({', '.join(shown)})"


class BaseReranker(ParamsMixin):
    """Base class: parameters from ``__init__``'s signature, clone, repr and fitted check.

    Class flags describe what a method needs, so listings and reports can show them:

    * ``requires_fit``: ``fit`` learns state (a bank statistic, a model) before ``rerank``.
    * ``needs_bank``: ``fit`` takes query-bank scores against the test gallery.
    * ``needs_intra_modal``: the method uses image-image / text-text similarities.
    * ``transductive``: ``rerank`` uses the other test queries (e.g. DSL); report separately.
    """

    requires_fit: ClassVar[bool] = True
    needs_bank: ClassVar[bool] = False
    needs_intra_modal: ClassVar[bool] = False
    transductive: ClassVar[bool] = False

    def _check_is_fitted(self) -> None:
        if self.requires_fit and not any(
            k.endswith("_") and not k.startswith("_") for k in vars(self)
        ):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit() or load() first."
            )
