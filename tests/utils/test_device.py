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
    from pillar_rerank.utils.device import cpu_has_native_bf16

    with autocast(cpu, "auto"):  # bf16 only on a CPU with native bf16
        assert (a @ a).dtype == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    with autocast(cpu, "fp32"):
        assert (a @ a).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with pytest.raises(InvalidParameterError, match="precision"):
        autocast(cpu, "fp8")


@pytest.fixture
def fake_cpu(monkeypatch):
    """Replace the CPU capability sources: ``fake_cpu(torch_probe, flags, machine, mkldnn)``."""
    from pillar_rerank.utils import device as mod

    def install(torch_probe=False, flags=(), machine="x86_64", mkldnn=True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: torch_probe, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        monkeypatch.setattr(mod, "_cpuinfo_flags", lambda: frozenset(flags))
        monkeypatch.setattr(mod.platform, "machine", lambda: machine)
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: mkldnn)
        mod.cpu_has_native_bf16.cache_clear()

    yield install
    mod.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, "fp32"),  # AVX2-only x86 (this machine's kind): bf16 would be emulated
    ({"flags": ("avx2", "avx512f", "avx512bw")}, "fp32"),  # AVX-512 without BF16
    ({"flags": ("avx512f", "avx512_bf16")}, "bf16"),  # Cooper Lake / Zen 4
    ({"flags": ("amx_tile", "amx_bf16")}, "bf16"),  # Sapphire Rapids
    ({"torch_probe": True}, "bf16"),  # torch's cpuinfo probe alone
    ({"flags": ("avx512_bf16",), "mkldnn": False}, "fp32"),  # no oneDNN: no fast bf16 kernels
    ({"flags": ("fp", "asimd", "bf16"), "machine": "aarch64"}, "bf16"),  # Arm with BF16
    ({"flags": ("bf16",), "machine": "x86_64"}, "fp32"),  # not an x86 flag
])
def test_auto_precision_follows_detected_cpu_bf16(fake_cpu, kw, expected):
    from pillar_rerank.utils.device import autocast, resolve_precision

    fake_cpu(**kw)
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "auto") == expected
    a = torch.ones(4, 4)
    with autocast(cpu, "auto"):
        assert (a @ a).dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
    # explicit choices are never overridden by detection
    assert resolve_precision(cpu, "fp32") == "fp32"
    assert resolve_precision(cpu, "bf16") == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_trains_in_fp32_even_where_bf16_is_native(fake_cpu, native):
    from pillar_rerank.utils.device import autocast, resolve_precision

    fake_cpu(flags=("avx512f", "avx512_bf16") if native else ())
    cpu, a = torch.device("cpu"), torch.ones(4, 4)
    assert resolve_precision(cpu, "auto", training=True) == "fp32"
    assert resolve_precision(cpu, "auto") == ("bf16" if native else "fp32")   # re-ranking
    with autocast(cpu, "auto", training=True):
        assert (a @ a).dtype == torch.float32
    with autocast(cpu, "bf16", training=True):   # asked for: kept
        assert (a @ a).dtype == torch.bfloat16


def test_auto_precision_on_this_machine_matches_its_cpu_flags():
    from pathlib import Path

    from pillar_rerank.utils.device import cpu_has_native_bf16, resolve_precision

    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.lower().startswith(("flags", "features")):
            flags = set(line.split(":", 1)[1].split())
            break
    if not flags:
        pytest.skip("no /proc/cpuinfo flags")
    native = bool(flags & {"avx512_bf16", "amx_bf16"}) and torch.backends.mkldnn.is_available()
    if flags & {"avx512_bf16", "amx_bf16", "avx2"}:  # an x86 CPU: the flags decide
        assert cpu_has_native_bf16() is native
        assert resolve_precision(torch.device("cpu"), "auto") == ("bf16" if native else "fp32")


def test_resolve_precision_rejects_unknown():
    from pillar_rerank.utils.device import resolve_precision

    with pytest.raises(InvalidParameterError, match="precision"):
        resolve_precision(torch.device("cpu"), "fp16")
