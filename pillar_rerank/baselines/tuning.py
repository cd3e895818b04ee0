"""Pick a method's main hyper-parameter(s) on the development side only."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pillar_rerank.baselines.bank import Bank, apply_both, bank_from_embeddings
from pillar_rerank.baselines.registry import _lookup, get_baseline
from pillar_rerank.exceptions import InvalidInputError, InvalidParameterError
from pillar_rerank.inputs import RetrievalSet
from pillar_rerank.metrics import recall_metrics
from pillar_rerank.utils.progress import progress
from pillar_rerank.utils.seed import check_random_state

logger = logging.getLogger(__name__)


@dataclass
class TuneResult:
    """Outcome of :func:`tune`: the chosen parameters and the score of every grid point."""

    name: str
    best_params: dict[str, Any]
    best_rsum: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    protocol: str = ""
    best_params_i2t: dict[str, Any] = field(default_factory=dict)
    best_params_t2i: dict[str, Any] = field(default_factory=dict)
    base_rsum: float | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The choice file of ``rerank tune -o``; ``rerank baseline --params-from`` and ``rerank fit
        --normalize-params-from`` read it back (:func:`load_choice`)."""
        return {"name": self.name, "best_params": self.best_params, "best_rsum": self.best_rsum,
                "best_params_i2t": self.best_params_i2t, "best_params_t2i": self.best_params_t2i,
                "base_rsum": self.base_rsum, "protocol": self.protocol, "trials": self.trials,
                "skipped": self.skipped}


def load_choice(path: Any, *, name: str | None = None) -> dict[str, Any]:
    """Read a ``rerank tune -o`` choice file: ``{"name", "best_params", "best_params_i2t",
    "best_params_t2i", ...}``, checked; ``name`` (when given) must be the tuned method."""
    from pillar_rerank.io import load_json

    doc = load_json(path, name="tuning choice")
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or not all(
            isinstance(doc.get(k), dict) for k in ("best_params", "best_params_i2t", "best_params_t2i")):
        raise InvalidInputError(
            f"tuning choice ({path}): expected the JSON written by `rerank tune -o` (name, best_params, "
            "best_params_i2t, best_params_t2i)."
        )
    if name is not None and doc["name"] != name:
        raise InvalidInputError(f"tuning choice ({path}): tunes {doc['name']!r}, not {name!r}.")
    return doc


def choice_params(choice: dict[str, Any], *, per_direction: bool) -> dict[str, Any]:
    """Parameters of a tuning choice: the joint best (best RSUM), or with ``per_direction`` the
    form ``{"i2t": best_params_i2t, "t2i": best_params_t2i}`` that ``LeaPRRConfig.normalize_params``
    and ``apply_both(..., t2i_method=...)`` take."""
    if per_direction:
        return {"i2t": dict(choice["best_params_i2t"]), "t2i": dict(choice["best_params_t2i"])}
    return dict(choice["best_params"])


def split_dev(dev: RetrievalSet, *, seed: int = 0) -> tuple[RetrievalSet, Bank]:
    """Split ``dev`` by images into an evaluation half and a bank half (disjoint queries).

    The bank half's images and captions become the bank queries against the evaluation half's
    gallery, so tuning never uses an evaluated query as a bank query. With embeddings every bank
    field is filled; with a score matrix only, the cross-modal and dual fields.
    """
    if dev.n_images < 4:
        raise InvalidInputError(f"tune: the dev set needs at least 4 images to split; got {dev.n_images}.")
    perm = check_random_state(seed).permutation(dev.n_images)
    half = dev.n_images // 2
    eval_imgs, bank_imgs = np.sort(perm[:half]), np.sort(perm[half:])
    evaluation = dev.subset_images(eval_imgs, name=f"{dev.name}[eval half]")
    bank_side = dev.subset_images(bank_imgs, name=f"{dev.name}[bank half]")
    if dev.has_embeddings:
        return evaluation, bank_from_embeddings(bank_side, evaluation)
    s = dev.similarity()
    _, eval_caps = dev.relevance.subset(eval_imgs)
    _, bank_caps = dev.relevance.subset(bank_imgs)
    bank_rows = s[bank_imgs]
    i2t_dual = np.ascontiguousarray(bank_rows[:, bank_caps])
    return evaluation, Bank(
        i2t=np.ascontiguousarray(bank_rows[:, eval_caps]),
        t2i=np.ascontiguousarray(s[eval_imgs][:, bank_caps].T),
        i2t_dual=i2t_dual,
        t2i_dual=np.ascontiguousarray(i2t_dual.T),
    )


def parameter_grid(name: str, grid: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """Cartesian product of ``grid`` (default: the method's ``tuning_grid``)."""
    cls = _lookup(name)
    grid = dict(cls.tuning_grid if grid is None else grid)
    if not grid:
        raise InvalidParameterError(f"tune: {cls.__name__} has no tunable parameter.")
    for key, values in grid.items():
        if key not in cls._param_names():
            raise InvalidParameterError(f"tune: {cls.__name__} has no parameter {key!r}.")
        if not isinstance(values, (list, tuple)) or not values:
            raise InvalidParameterError(f"tune: grid for {key!r} must be a non-empty list; got {values!r}.")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def tune(name: str, dev: RetrievalSet, *, bank: Bank | None = None, grid: dict[str, list[Any]] | None = None,
         fixed: dict[str, Any] | None = None, seed: int = 0, show_progress: bool = False) -> TuneResult:
    """Sweep ``name``'s main hyper-parameter(s) on the development side; pick the best RSUM.

    Parameters
    ----------
    name : str
        Registry name of the method.
    dev : RetrievalSet
        Development set (never the evaluation set).
    bank : Bank, optional
        Bank against ``dev``'s gallery. Without it, ``dev`` is split by images (:func:`split_dev`)
        into an evaluation half and a bank half.
    grid : dict, optional
        Values to sweep (default: the method's ``tuning_grid``).
    fixed : dict, optional
        Other parameters, held constant.
    seed : int, default=0
        Seed of the dev split.
    show_progress : bool, default=False
        A progress bar over the grid points (stderr).

    Returns
    -------
    TuneResult
        ``best_params``: the first grid point with the highest RSUM (grid order breaks ties);
        ``best_params_i2t`` / ``best_params_t2i``: the best point for each direction's own
        R@1 + R@5 + R@10 (use with ``apply_both(..., t2i_method=...)``), from the same trials;
        ``base_rsum``: the evaluated part without re-ranking; ``skipped``: grid points invalid for
        this dev set or bank (e.g. ``k`` above the number of bank queries), each with the reason;
        the sweep goes on without them (an error only when every point is invalid).
    """
    fixed = dict(fixed or {})
    points = parameter_grid(name, grid)
    if bank is None:
        evaluation, bank = split_dev(dev, seed=seed)
        protocol = f"dev split by images (seed {seed}): {evaluation.n_images} evaluated, rest as bank"
    else:
        evaluation = dev
        protocol = f"dev set ({dev.n_images} images) with the given bank"
    base_rsum = float(recall_metrics(evaluation.similarity(), evaluation.relevance)["RSUM"])
    trials, skipped = [], []
    for point in progress(points, desc=f"tune {name}", disable=not show_progress):
        try:
            method = get_baseline(name, **{**fixed, **point})
            out = apply_both(method, evaluation, bank)
        except InvalidParameterError as exc:  # e.g. k larger than this bank: skip, keep the sweep
            skipped.append({"params": point, "reason": str(exc)})
            logger.warning("tune %s: skipped %s (%s)", name, point, exc)
            continue
        metrics = recall_metrics(out.scores, out.relevance, t2i_scores=out.t2i_scores)
        sums = {d: sum(metrics[f"{d}_R@{k}"] for k in (1, 5, 10)) for d in ("i2t", "t2i")}
        trials.append({"params": point, "RSUM": metrics["RSUM"], "i2t_sum": sums["i2t"],
                       "t2i_sum": sums["t2i"]})
        logger.info("tune %s %s: RSUM %.2f", name, point, metrics["RSUM"])
    if not trials:
        raise InvalidParameterError(
            f"tune {name}: every grid point is invalid for this dev set / bank (first: "
            f"{skipped[0]['params']}: {skipped[0]['reason']}); give a --grid that fits it."
        )

    def best(key: str) -> dict[str, Any]:
        i = max(range(len(trials)), key=lambda j: (trials[j][key], -j))
        return trials[i]

    return TuneResult(name=name, best_params={**fixed, **best("RSUM")["params"]},
                      best_rsum=best("RSUM")["RSUM"], trials=trials, protocol=protocol,
                      best_params_i2t={**fixed, **best("i2t_sum")["params"]},
                      best_params_t2i={**fixed, **best("t2i_sum")["params"]},
                      base_rsum=base_rsum, skipped=skipped)
