"""Small shared helpers: device resolution, seeding and block iteration."""

from pillar_rerank.utils.blocks import block_rows, iter_blocks
from pillar_rerank.utils.device import resolve_device
from pillar_rerank.utils.seed import check_random_state, seed_everything

__all__ = ["block_rows", "check_random_state", "iter_blocks", "resolve_device", "seed_everything"]
