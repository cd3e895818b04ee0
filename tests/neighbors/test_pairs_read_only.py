"""PairScores from read-only (memory-mapped) embeddings: no torch 'not writable' warning, no aliasing."""

import warnings

import numpy as np

from pillar_rerank.io import load_array
from pillar_rerank.neighbors._pairs import PairScores


def test_memory_mapped_embeddings_give_no_warning_and_are_not_shared(tmp_path):
    """Issue 15 item 27: every fit from embeddings printed torch's "array is not writable" warning."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((5, 3)).astype(np.float32))
    np.save(tmp_path / "b.npy", rng.standard_normal((7, 3)).astype(np.float32))
    left, right = load_array(tmp_path / "a.npy", mmap=True), load_array(tmp_path / "b.npy", mmap=True)
    assert not left.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pairs = PairScores(left=left, right=right)
    pairs.left[0, 0] = 123.0  # a tensor torch may write to: it must not alias the read-only file
    assert np.load(tmp_path / "a.npy")[0, 0] != 123.0 and left[0, 0] != 123.0
