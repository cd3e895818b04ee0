"""assemble_bank: the bank a user supplies (embeddings or score matrices), checked against the target."""

import numpy as np
import pytest

from pillar_rerank.baselines.bank import assemble_bank, bank_from_embeddings
from pillar_rerank.exceptions import InvalidInputError


def test_from_embeddings_matches_bank_from_embeddings(set_factory):
    target, bank_side = set_factory(8), set_factory(10)
    got = assemble_bank(target, image_embeddings=bank_side.image_embeddings,
                        text_embeddings=bank_side.text_embeddings)
    want = bank_from_embeddings(bank_side, target)
    for field in ("i2t", "t2i", "i2t_dual", "t2i_dual", "i2t_intra", "t2i_intra"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def test_from_scores_fills_both_dual_fields(set_factory, rng):
    target = set_factory(6)
    dual = rng.standard_normal((4, 9)).astype(np.float32)
    i2t = rng.standard_normal((4, target.n_texts)).astype(np.float32)
    bank = assemble_bank(target, i2t=i2t, dual=dual)
    assert bank.i2t is i2t and bank.i2t_dual is dual and np.array_equal(bank.t2i_dual, dual.T)
    assert assemble_bank(target) is None


@pytest.mark.parametrize("case, needle", [
    ("one embedding", "give both --bank-image-emb and --bank-text-emb"),
    ("both kinds", "not both"),
    ("target without embeddings", "need the embeddings"),
    ("wrong gallery", "bank.i2t"),
])
def test_errors_name_the_user_spelling(set_factory, rng, case, needle):
    target, other = set_factory(6), set_factory(5)
    flags = {"image_embeddings": "--bank-image-emb", "text_embeddings": "--bank-text-emb"}
    kwargs = {
        "one embedding": {"image_embeddings": other.image_embeddings},
        "both kinds": {"image_embeddings": other.image_embeddings, "text_embeddings": other.text_embeddings,
                       "i2t": np.zeros((3, target.n_texts), np.float32)},
        "target without embeddings": {"image_embeddings": other.image_embeddings,
                                      "text_embeddings": other.text_embeddings},
        "wrong gallery": {"i2t": np.zeros((3, target.n_texts + 1), np.float32)},
    }[case]
    if case == "target without embeddings":
        target = target.with_scores(target.scores)
        object.__setattr__(target, "image_embeddings", None)
        object.__setattr__(target, "text_embeddings", None)
    with pytest.raises(InvalidInputError, match=needle):
        assemble_bank(target, **kwargs, flags=flags)
