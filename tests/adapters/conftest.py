"""Closed-form inputs of the spec's golden cases (../shared/spec/adapters.md section 6.3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "golden_spec_6_3.json").read_text())


def _ar(n, dtype):
    return torch.arange(n, dtype=dtype)


@pytest.fixture
def golden():
    return GOLDEN


@pytest.fixture
def listwise_case():
    """(a) B = 6: sims, the caption tables; float64."""
    dt = torch.float64
    i, d = _ar(6, dt)[:, None], _ar(16, dt)[None]
    img = F.normalize(torch.sin(1.3 * i + 0.7 * d + 0.1), dim=-1)
    txt = F.normalize(torch.cos(0.9 * i + 1.1 * d + 0.3) + 0.5 * img, dim=-1)
    caps = torch.sin(
        0.5 * _ar(6, dt)[:, None, None] + 1.7 * _ar(5, dt)[None, :, None] + 0.3 * _ar(8, dt)[None, None]
    )
    return {"img": img, "txt": txt, "sims": img @ txt.T, "caps": caps, "cap": caps[:, 0]}


@pytest.fixture
def selfalign_case():
    """(b) B = 4, R = 5, L = 6, D = 8, K = 10; float64."""
    dt = torch.float64
    b, dd = _ar(4, dt)[:, None, None], _ar(8, dt)[None, None]
    v = F.normalize(torch.sin(0.2 * b + 0.5 * _ar(5, dt)[None, :, None] + 0.9 * dd), dim=-1)
    t = F.normalize(torch.cos(0.4 * b + 0.35 * _ar(6, dt)[None, :, None] + 0.6 * dd), dim=-1)
    w = torch.cos(0.3 * _ar(10, dt)[:, None] + 0.77 * _ar(8, dt)[None])
    i4 = _ar(4, dt)
    return {
        "v": v,
        "t": t,
        "W": w,
        "lens": torch.tensor([6, 4, 5, 3]),
        "S4": torch.cos(0.8 * i4[:, None] - 1.9 * i4[None]),
    }


@pytest.fixture
def inflate_case():
    """(c) late interaction tokens and the KD matrices; float64."""
    dt = torch.float64
    a, d8 = _ar(4, dt)[:, None, None], _ar(8, dt)[None, None]
    vt = F.normalize(torch.sin(0.6 * a + 1.1 * _ar(3, dt)[None, :, None] + 0.45 * d8), dim=-1)
    tt = F.normalize(torch.sin(0.6 * a + 0.8 * _ar(5, dt)[None, :, None] + 0.45 * d8 + 0.2), dim=-1)
    i4 = _ar(4, dt)
    return {
        "vt": vt,
        "tt": tt,
        "ST": torch.sin(i4[:, None] + 0.5 * i4[None]),
        "SS": torch.cos(0.7 * i4[:, None] - 0.4 * i4[None]),
    }


@pytest.fixture(params=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on shared cores (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
