"""Access to a builder's lists with an optional in-memory cache (training and validation).

Image- and text-query lists are deterministic, so when they fit in ``budget_bytes`` they are
built once in blocks and sliced afterwards; mapped lists always come from the builder (the
i2t mapping draws a random caption per candidate image).
"""

from __future__ import annotations

import torch

from pillar_rerank.lists import QueryLists

DEFAULT_CACHE_BYTES = 1 << 30


def list_nbytes(n_queries: int, n_nodes: int, n_pillars: int) -> int:
    """Approximate bytes of ``n_queries`` lists (features, adjacency, targets, ids)."""
    return n_queries * (n_nodes * 2 * n_pillars * 4 + n_nodes * n_nodes * 4 + n_nodes * 9 + 8)


def get_builder_class():
    """The list builder of ``pillar_rerank`` (imported lazily: it depends on faiss)."""
    from pillar_rerank.pillars import ListBuilder

    return ListBuilder


def _cat(parts: list[QueryLists]) -> QueryLists:
    if len(parts) == 1:
        return parts[0]
    return QueryLists(
        *(
            torch.cat([getattr(p, name) for p in parts])
            for name in ("features", "targets", "adjacency", "candidates", "query_ids")
        )
    )


class ListSource:
    """Serve image/text/mapped lists of one retrieval set, caching what fits.

    Parameters
    ----------
    builder : ListBuilder
    config : LeaPRRConfig
    budget_bytes : int
        Cache image- and text-query lists when both fit together.
    block : int
        Queries per builder call while filling the cache.
    """

    def __init__(
        self, builder, config, *, budget_bytes: int = DEFAULT_CACHE_BYTES, block: int = 2048
    ) -> None:
        self.builder = builder
        self.n_images = int(builder.n_images)
        self.n_texts = int(builder.n_texts)
        need = list_nbytes(self.n_images, config.list_len_i2t, config.n_pillars) + list_nbytes(
            self.n_texts, config.list_len_t2i, config.n_pillars
        )
        self._image: QueryLists | None = None
        self._text: QueryLists | None = None
        if need <= budget_bytes:
            self._image = self._build(builder.image_lists, self.n_images, block)
            self._text = self._build(builder.text_lists, self.n_texts, block)

    @staticmethod
    def _build(fn, n: int, block: int) -> QueryLists:
        return _cat([fn(torch.arange(s, min(s + block, n), dtype=torch.long)) for s in range(0, n, block)])

    @property
    def cached(self) -> bool:
        return self._image is not None

    def image_lists(self, ids: torch.Tensor) -> QueryLists:
        return self._image[ids] if self._image is not None else self.builder.image_lists(ids)

    def text_lists(self, ids: torch.Tensor) -> QueryLists:
        return self._text[ids] if self._text is not None else self.builder.text_lists(ids)

    def mapped_lists(
        self,
        text_ids: torch.Tensor,
        generator: torch.Generator,
        *,
        image_lists: QueryLists | None = None,
        text_lists: QueryLists | None = None,
    ) -> tuple[QueryLists, QueryLists]:
        """``(t2i_map, i2t_map)``; pass the batch's own lists to avoid rebuilding them."""
        return self.builder.mapped_lists(text_ids, generator, image_lists=image_lists, text_lists=text_lists)
