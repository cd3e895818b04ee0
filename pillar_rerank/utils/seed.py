"""Seeding helpers: explicit generators rather than seeds set at import."""

from __future__ import annotations

import random

import numpy as np
import torch

from pillar_rerank.exceptions import InvalidParameterError


def check_random_state(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Return a numpy Generator from ``None``, an int seed or a Generator."""
    if seed is None or isinstance(seed, (int, np.integer)):
        if seed is not None and int(seed) < 0:
            raise InvalidParameterError(f"seed: expected a non-negative int; got {seed!r}.")
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    raise InvalidParameterError(f"seed: expected None, an int or a numpy Generator; got {seed!r}.")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch, and return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds code that uses the legacy global RNG
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen
