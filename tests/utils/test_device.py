import pytest
import torch

from pillar_rerank.exceptions import InvalidParameterError
from pillar_rerank.utils import check_random_state, resolve_device, seed_everything


def test_none_resolves_to_available_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected


def test_explicit_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_without_gpu_is_an_error_not_a_fallback():
    with pytest.raises(InvalidParameterError, match="no CUDA device"):
        resolve_device("cuda")


@pytest.mark.parametrize("bad", ["tpu", "gpu0", 3.5])
def test_unknown_device_strings(bad):
    with pytest.raises(InvalidParameterError, match="device"):
        resolve_device(bad)


def test_random_state_and_seeding_are_reproducible():
    assert check_random_state(3).integers(1000) == check_random_state(3).integers(1000)
    g1, g2 = seed_everything(5), seed_everything(5)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    with pytest.raises(InvalidParameterError):
        check_random_state(-1)


def test_autocast_precision_choices():
    from pillar_rerank.utils.device import autocast

    cpu = torch.device("cpu")
    a = torch.ones(4, 4)
    with autocast(cpu, "auto"):  # off on CPU: reproducible fp32
        assert (a @ a).dtype == torch.float32
    with autocast(cpu, "fp32"):
        assert (a @ a).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with pytest.raises(InvalidParameterError, match="precision"):
        autocast(cpu, "fp8")
