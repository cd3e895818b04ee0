import pytest

from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.utils.blocks import block_rows, iter_blocks, parse_bytes


def test_iter_blocks_covers_range_exactly_once():
    slices = list(iter_blocks(10, 3))
    covered = [i for s in slices for i in range(s.start, s.stop)]
    assert covered == list(range(10))
    assert [s.stop - s.start for s in slices] == [3, 3, 3, 1]


def test_block_rows_respects_budget():
    assert block_rows(1000, bytes_per_item=4, budget_bytes=40_000) == 10
    assert block_rows(10**9, budget_bytes=1) == 1


@pytest.mark.parametrize("text, expected", [("4GB", 4 * 2**30), ("512MiB", 512 * 2**20), ("1.5k", 1536),
                                            (1024, 1024)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1GB", "4XB"])
def test_parse_bytes_rejects_garbage(text):
    with pytest.raises(InvalidParameterError, match="memory size"):
        parse_bytes(text)
