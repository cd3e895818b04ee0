import pytest

from pillar_rerank._validation import Interval
from pillar_rerank.base import BaseReranker
from pillar_rerank.exceptions import InvalidParameterError, NotFittedError


class Toy(BaseReranker):
    _parameter_constraints = {"k": [Interval(int, 1, None)]}

    def __init__(self, *, k: int = 10, device: str | None = None):
        self.k = k
        self.device = device

    def fit(self, data=None):
        self._validate_params()
        self.stats_ = self.k
        return self


class Free(BaseReranker):
    requires_fit = False

    def __init__(self, *, alpha: float = 1.0):
        self.alpha = alpha


def test_params_clone_and_repr():
    t = Toy(k=3)
    assert t.get_params() == {"device": None, "k": 3}
    assert repr(t) == "Toy(k=3)"
    t.fit()
    c = t.clone()
    assert c.get_params() == t.get_params() and not hasattr(c, "stats_")
    assert t.set_params(k=4) is t and t.k == 4
    with pytest.raises(InvalidParameterError, match="Toy has no parameter 'q'; valid: device, k"):
        t.set_params(q=1)


def test_fitted_check_and_parameter_table():
    with pytest.raises(NotFittedError, match="This Toy instance is not fitted yet"):
        Toy()._check_is_fitted()
    Toy().fit()._check_is_fitted()
    Free()._check_is_fitted()  # learns nothing: no fit needed
    with pytest.raises(InvalidParameterError, match="The 'k' parameter of Toy must be an int"):
        Toy(k=0).fit()


def test_var_args_are_refused():
    class Bad(BaseReranker):
        def __init__(self, **kw):
            pass

    with pytest.raises(TypeError, match="must not take \\*args or \\*\\*kwargs"):
        Bad().get_params()
