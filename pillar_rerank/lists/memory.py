"""In-memory list source: a builder's image/text lists built once and sliced (training, dev).

Image- and text-query lists are deterministic, so when they fit in ``budget_bytes`` they are
built once in blocks and sliced afterwards; mapped lists always come from the source (the i2t
mapping draws a random caption per candidate image).
"""

from __future__ import annotations

import torch

from pillar_rerank.lists.contract import ListSource, QueryLists, concat_lists
from pillar_rerank.utils.memory import list_query_bytes

DEFAULT_CACHE_BYTES = 1 << 30


class MemoryLists:
    """Serve image/text/mapped lists of one retrieval set, holding image/text lists when they fit.

    Parameters
    ----------
    source : ListSource
        A :class:`~pillar_rerank.lists.builder.ListBuilder` or a
        :class:`~pillar_rerank.lists.cached.CachedLists`.
    lists : ListsConfig
        The list shape (``config.lists``), for the memory estimate.
    budget_bytes : int
        Hold image- and text-query lists when both fit together.
    block : int
        Queries per source call while filling.
    """

    def __init__(self, source: ListSource, lists, *, budget_bytes: int = DEFAULT_CACHE_BYTES,
                 block: int = 2048) -> None:
        self.source = source
        self.n_images = int(source.n_images)
        self.n_texts = int(source.n_texts)
        need = (self.n_images * list_query_bytes(lists.list_len_i2t, lists.n_pillars)
                + self.n_texts * list_query_bytes(lists.list_len_t2i, lists.n_pillars))
        self._image: QueryLists | None = None
        self._text: QueryLists | None = None
        if need <= budget_bytes:
            self._image = self._build(source.image_lists, self.n_images, block)
            self._text = self._build(source.text_lists, self.n_texts, block)

    @staticmethod
    def _build(fn, n: int, block: int) -> QueryLists:
        return concat_lists([fn(torch.arange(s, min(s + block, n), dtype=torch.long))
                             for s in range(0, n, block)])

    @property
    def cached(self) -> bool:
        return self._image is not None

    def image_lists(self, image_ids: torch.Tensor) -> QueryLists:
        return self._image[image_ids] if self._image is not None else self.source.image_lists(image_ids)

    def text_lists(self, text_ids: torch.Tensor) -> QueryLists:
        return self._text[text_ids] if self._text is not None else self.source.text_lists(text_ids)

    def mapped_lists(self, text_ids: torch.Tensor, generator: torch.Generator, *,
                     image_lists: QueryLists | None = None,
                     text_lists: QueryLists | None = None) -> tuple[QueryLists, QueryLists]:
        """``(t2i_map, i2t_map)``; pass the batch's own lists to avoid rebuilding them."""
        return self.source.mapped_lists(text_ids, generator, image_lists=image_lists, text_lists=text_lists)


__all__ = ["DEFAULT_CACHE_BYTES", "MemoryLists"]
