"""Property-based tests: hostile and odd inputs give a correct result or a clear error.

Covers the data loaders (``load_array``, ``load_retrieval_set``, ``Relevance``, ``RetrievalSet``,
``Qrels.load``), the metrics (``recall_metrics``, ``evaluate``, against a brute-force Python
oracle) and the ``rerank eval`` command. "Clear error" means a
:class:`~pillar_rerank.exceptions.PillarRerankError` (never a raw numpy / Python exception) and,
at the CLI, exit code 2 or 3 with a one-line message and no traceback.

Every example is tallied by kind; set ``RELIABILITY_CASES_OUT=path.json`` to write the tally
(used for the issue's closing note).
"""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pillar_rerank.cli.main import cli

from pillar_rerank.exceptions import InputFileError, InvalidInputError, PillarRerankError
from pillar_rerank.inputs import Relevance, RetrievalSet, load_retrieval_set
from pillar_rerank.io import load_array
from pillar_rerank.metrics import evaluate, recall_metrics
from pillar_rerank.metrics.qrels import Qrels

CASES: Counter = Counter()
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                        HealthCheck.too_slow])
FLOATS = (np.float16, np.float32, np.float64)


def tally(kind: str, outcome: str) -> None:
    CASES[f"{kind} -> {outcome}"] += 1


@pytest.fixture(scope="module", autouse=True)
def _write_tally():
    yield
    out = os.environ.get("RELIABILITY_CASES_OUT")
    if out:
        Path(out).write_text(json.dumps(dict(sorted(CASES.items())), indent=2) + "\n")


@pytest.fixture(autouse=True)
def _no_hang():
    """Fail (instead of hanging the suite) when one test runs past 60 s."""
    def fail(signum, frame):  # pragma: no cover - only on a hang
        raise TimeoutError("hostile-input test ran past 60 s (a hang?)")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def outcome_of(fn):
    """Run ``fn``: ("ok", value) or ("error", PillarRerankError); any other exception propagates."""
    try:
        return "ok", fn()
    except PillarRerankError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg.strip(), f"error message is not one line: {msg!r}"
        return "error", exc


# ---------------------------------------------------------------------------------- oracle
def oracle_ranks(scores: np.ndarray, positives: list[np.ndarray]) -> list[np.ndarray]:
    """0-based stable-rule rank of every positive of every query, by a plain Python loop.

    The ranking sorts by descending score, lower gallery index first among equal scores.
    """
    out = []
    s = np.asarray(scores, dtype=np.float64)
    for q, pos in enumerate(positives):
        order = sorted(range(s.shape[1]), key=lambda g: (-s[q, g], g))
        where = {g: r for r, g in enumerate(order)}
        out.append(np.array(sorted(where[int(p)] for p in pos), dtype=np.int64))
    return out


def oracle_metrics(scores: np.ndarray, t2i: np.ndarray, n_images: int, ks=(1, 5, 10)) -> dict:
    """R@K, medr, meanr, mAP@R, R-P and binary NDCG@K of both directions (+ RSUM)."""
    i2t_pos = [np.flatnonzero(t2i == i) for i in range(n_images)]
    t2i_pos = [np.array([img]) for img in t2i]
    out = {}
    for d, mat, pos in (("i2t", scores, i2t_pos), ("t2i", np.asarray(scores).T, t2i_pos)):
        ranks = oracle_ranks(mat, pos)
        best = np.array([r[0] for r in ranks])
        n_gallery = mat.shape[1]
        for k in ks:
            out[f"{d}_R@{k}"] = 100.0 * np.mean(best < k)
        out[f"{d}_medr"] = float(np.floor(np.median(best)) + 1)
        out[f"{d}_meanr"] = float(np.mean(best) + 1)
        maps, rps, ndcgs = [], [], []
        for r in ranks:
            big_r = len(r)
            hits = [(j + 1) / (rank + 1) for j, rank in enumerate(r) if rank < big_r]
            maps.append(sum(hits) / big_r)
            rps.append(len(hits) / big_r)
        out[f"{d}_mAP@R"] = 100.0 * float(np.mean(maps))
        out[f"{d}_R-P"] = 100.0 * float(np.mean(rps))
        k = min(3, n_gallery)
        for r in ranks:
            dcg = sum(1.0 / math.log2(rank + 2) for rank in r if rank < k)
            idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(r), k)))
            ndcgs.append(dcg / idcg)
        out[f"{d}_NDCG@{k}"] = 100.0 * float(np.mean(ndcgs))
    out["RSUM"] = sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    return out


# ---------------------------------------------------------------------------------- strategies
@st.composite
def caption_maps(draw, max_images: int = 6, max_caps: int = 5):
    """A valid caption -> image map: every image has 1..max_caps captions, possibly very unequal,
    in shuffled or contiguous order."""
    n_images = draw(st.integers(1, max_images))
    counts = draw(st.lists(st.integers(1, max_caps), min_size=n_images, max_size=n_images))
    if draw(st.booleans()):  # very unequal: one image takes most captions
        counts[draw(st.integers(0, n_images - 1))] = draw(st.integers(max_caps, 3 * max_caps))
    t2i = np.repeat(np.arange(n_images), counts)
    if draw(st.booleans()):
        t2i = np.asarray(draw(st.permutations(list(t2i))), dtype=np.int64)
    return t2i, n_images


@st.composite
def tied_scores(draw, n_images: int, n_texts: int):
    """Scores with many ties (few distinct levels), in a random float dtype, layout and magnitude."""
    levels = draw(st.integers(1, 4))  # 1 level: a constant matrix
    ints = np.asarray(draw(st.lists(st.integers(0, levels - 1), min_size=n_images * n_texts,
                                    max_size=n_images * n_texts)), dtype=np.float64)
    ints = ints.reshape(n_images, n_texts)
    dtype = draw(st.sampled_from(FLOATS))
    scale_kind = draw(st.sampled_from(["unit", "huge", "tiny", "negative", "float16-extreme"]))
    if scale_kind == "huge":
        values = ints * (1e30 if dtype != np.float16 else 1e4)
    elif scale_kind == "tiny":
        values = ints * (1e-30 if dtype != np.float16 else 6e-8)  # float16: subnormal steps
    elif scale_kind == "negative":
        values = -ints - 1e3
    elif scale_kind == "float16-extreme":
        values = np.choose(ints.astype(int) % 4, [-65504.0, -6e-8, 6e-8, 65504.0])
    else:
        values = ints / max(1, levels - 1)
    arr = values.astype(dtype)
    if draw(st.booleans()):
        arr = np.asfortranarray(arr)
    return arr, f"{np.dtype(dtype).name}/{scale_kind}"


def _save_memmap(tmp_path: Path, arr: np.ndarray) -> np.ndarray:
    path = tmp_path / f"mm_{os.getpid()}_{id(arr)}.npy"
    np.save(path, arr)
    return np.load(path, mmap_mode="r", allow_pickle=False)


# ---------------------------------------------------------------------------------- metrics
@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_metrics_match_brute_force_oracle(data, tmp_path_factory):
    t2i, n_images = data.draw(caption_maps())
    n_texts = t2i.shape[0]
    scores, kind = data.draw(tied_scores(n_images, n_texts))
    layout = data.draw(st.sampled_from(["array", "memmap", "read-only"]))
    if layout == "memmap":
        scores = _save_memmap(tmp_path_factory.mktemp("mm"), scores)
    elif layout == "read-only":
        scores = scores.copy()
        scores.setflags(write=False)
    rel = Relevance(t2i, n_images)
    want = oracle_metrics(scores, t2i, n_images)
    k_ndcg = min(3, n_images, n_texts)
    names = ["i2t_R@1", "t2i_R@1", "i2t_medr", "t2i_medr", "i2t_meanr", "t2i_meanr",
             "i2t_mAP@R", "t2i_mAP@R", "i2t_R-P", "t2i_R-P"]
    names += [f"i2t_NDCG@{min(3, n_texts)}", f"t2i_NDCG@{min(3, n_images)}"] if k_ndcg == 3 else []
    before = np.array(scores, copy=True)
    got = evaluate(scores, rel, names)
    for name in names:
        assert got[name] == pytest.approx(want[name], abs=1e-9), (name, kind, layout)
    # recall_metrics: R@K with K >= the gallery is 100 (every positive is in the top K)
    rm = recall_metrics(scores, rel)
    for key in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "RSUM"):
        assert rm[key] == pytest.approx(want[key], abs=1e-9), (key, kind, layout)
    assert np.array_equal(np.asarray(scores), before, equal_nan=True)  # input untouched
    # K past the gallery: a clear error from evaluate, never a silent clip
    status, err = outcome_of(lambda: evaluate(scores, rel, [f"i2t_R@{n_texts + 1}"]))
    assert status == "error" and "n_gallery" in str(err)
    tally("metrics vs oracle (ties, dtypes, magnitudes, layouts)", "equal")
    counts = np.bincount(t2i, minlength=n_images)
    arr = np.asarray(scores)
    for flag, label in ((n_images == 1, "one image"), (bool(np.all(counts == 1)), "one caption per image"),
                        (counts.max() >= 3 * counts.min(), "very unequal captions per image (>= 3x)"),
                        (bool(np.all(arr == arr.flat[0])), "constant score matrix"),
                        (np.abs(arr.astype(np.float64)).max() >= 1e29, "magnitude >= 1e29"),
                        (arr.dtype == np.float16 and np.abs(arr).max() == 65504, "float16 max"),
                        (bool(arr.flags.f_contiguous and not arr.flags.c_contiguous), "Fortran-ordered")):
        if flag:
            tally(f"metrics vs oracle: {label}", "equal")
    tally(f"metrics vs oracle: {kind}", "equal")
    tally(f"metrics layout {layout}", "equal")
    tally("metrics k > gallery", "error")


@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_metrics_over_folds_match_per_fold_oracle(data):
    n_folds = data.draw(st.integers(1, 3))
    fold_images = data.draw(st.integers(1, 3))
    n_images = n_folds * fold_images
    counts = data.draw(st.lists(st.integers(1, 4), min_size=n_images, max_size=n_images))
    t2i = np.asarray(data.draw(st.permutations(list(np.repeat(np.arange(n_images), counts)))), dtype=np.int64)
    scores, _ = data.draw(tied_scores(n_images, t2i.shape[0]))
    rel = Relevance(t2i, n_images)
    got = evaluate(scores, rel, ["i2t_R@1", "t2i_R@1", "t2i_mAP@R"], folds=n_folds)
    per_fold = []
    for f in range(n_folds):
        images = np.arange(f * fold_images, (f + 1) * fold_images)
        caps = np.flatnonzero(np.isin(t2i, images))
        sub = np.asarray(scores)[images][:, caps]
        per_fold.append(oracle_metrics(sub, t2i[caps] - images[0], fold_images))
    for name in ("i2t_R@1", "t2i_R@1", "t2i_mAP@R"):
        assert got[name] == pytest.approx(np.mean([p[name] for p in per_fold]), abs=1e-9)
    tally("metrics over folds vs oracle", "equal")


@pytest.mark.parametrize("kind", ["nan", "inf", "-inf", "int", "bool", "complex", "1-D", "3-D", "empty",
                                  "wrong-shape", "transposed", "object", "list-ragged"])
@settings(max_examples=4, **SETTINGS)
@given(data=st.data())
def test_metrics_reject_bad_scores_clearly(kind, data):
    t2i, n_images = data.draw(caption_maps(max_images=4))
    n_texts = t2i.shape[0]
    base = np.zeros((n_images, n_texts), dtype=np.float32)
    if kind in ("nan", "inf", "-inf"):
        bad = base.copy()
        idx = data.draw(st.integers(0, bad.size - 1))
        bad.flat[idx] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
    elif kind == "int":
        bad = base.astype(np.int32)
    elif kind == "bool":
        bad = base.astype(bool)
    elif kind == "complex":
        bad = base.astype(np.complex64)
    elif kind == "1-D":
        bad = base.ravel()
    elif kind == "3-D":
        bad = base[..., None]
    elif kind == "empty":
        bad = np.zeros((0, n_texts), dtype=np.float32)
    elif kind == "wrong-shape":
        bad = np.zeros((n_images + 1, n_texts), dtype=np.float32)
    elif kind == "transposed":
        if n_images == n_texts:
            bad = np.zeros((n_texts + 1, n_images), dtype=np.float32)
        else:
            bad = base.T.copy()
    elif kind == "object":
        bad = np.empty((n_images, n_texts), dtype=object)
    else:
        bad = [[0.0] * n_texts, [0.0]]
    rel = Relevance(t2i, n_images)
    for fn_name, fn in (("evaluate", lambda: evaluate(bad, rel, ["i2t_R@1"])),
                        ("recall_metrics", lambda: recall_metrics(bad, rel))):
        status, err = outcome_of(fn)
        assert status == "error", (fn_name, kind)
        assert isinstance(err, InvalidInputError)
        tally(f"metrics bad scores ({kind})", "error")


@settings(max_examples=20, **SETTINGS)
@given(t2i_n=caption_maps(max_images=4), magnitude=st.sampled_from([1e20, 1e30, 1e200, 6e4]))
def test_embedding_product_overflow_is_an_error_not_nonsense(t2i_n, magnitude):
    t2i, n_images = t2i_n
    dtype = np.float16 if magnitude == 6e4 else np.float64 if magnitude == 1e200 else np.float32
    img = np.full((n_images, 4), magnitude, dtype=dtype)
    txt = np.full((t2i.shape[0], 4), magnitude, dtype=dtype)
    data = RetrievalSet(relevance=Relevance(t2i, n_images), image_embeddings=img, text_embeddings=txt)
    status, err = outcome_of(lambda: evaluate(data, metrics=["i2t_R@1"]))
    if dtype == np.float16:  # float16 extremes multiply in float32 without overflow: a real result
        assert status == "ok" and err["i2t_R@1"] == pytest.approx(oracle_metrics(
            img.astype(np.float32) @ txt.astype(np.float32).T, t2i, n_images)["i2t_R@1"])
        tally("float16-extreme embeddings", "ok, equals oracle")
        return
    assert status == "error" and "overflow" in str(err)
    tally("embeddings whose product overflows", "error")


# ---------------------------------------------------------------------------------- Relevance
def _valid_or_random_map():
    valid = caption_maps().map(lambda m: (m[0].tolist(), m[1]))
    noisy = st.tuples(st.lists(st.integers(-3, 8), min_size=0, max_size=12), st.integers(-1, 6))
    return st.one_of(valid, noisy)


@settings(max_examples=60, **SETTINGS)
@given(map_n=_valid_or_random_map(),
       dtype=st.sampled_from(["int64", "int8", "uint16", "float64", "bool", "list"]))
def test_relevance_valid_or_clear_error(map_n, dtype):
    values, n_images = map_n
    arr = values if dtype == "list" else np.asarray(values, dtype=np.int64).astype(dtype)
    valid = (dtype in ("int64", "int8", "list") or (dtype == "uint16" and min(values, default=0) >= 0)) \
        and n_images >= 1 and len(values) > 0 and all(0 <= v < n_images for v in values) \
        and set(values) == set(range(n_images))
    status, rel = outcome_of(lambda: Relevance(arr, n_images))
    assert (status == "ok") == valid, (values, n_images, dtype)
    if status == "ok":
        for i in range(n_images):
            assert rel.captions_of(i).tolist() == [j for j, v in enumerate(values) if v == i]
        assert rel.indptr[-1] == len(values)
    tally("Relevance random maps", status)


@pytest.mark.parametrize("value", [
    [[0], [1, 2]], None, "abc", np.array([0, None], dtype=object), np.array([2**63 + 5], dtype=np.uint64),
    np.zeros((2, 2), dtype=np.int64), np.array([np.nan]), np.array([0.5]), np.array([], dtype=np.int64),
])
def test_relevance_odd_objects(value):
    status, err = outcome_of(lambda: Relevance(value, 2))
    assert status == "error" and isinstance(err, InvalidInputError)
    tally("Relevance odd objects", status)


@settings(max_examples=30, **SETTINGS)
@given(t2i_n=caption_maps(max_images=4), n_cpi=st.integers(1, 4))
def test_from_arguments_checks_captions_per_image(t2i_n, n_cpi):
    t2i, n_images = t2i_n
    status, rel = outcome_of(lambda: Relevance.from_arguments(n_images=n_images, n_texts=t2i.shape[0],
                                                              captions_per_image=n_cpi))
    assert (status == "ok") == (n_images * n_cpi == t2i.shape[0])
    tally("captions_per_image vs n_texts", status)


# ---------------------------------------------------------------------------------- load_array
@st.composite
def saved_arrays(draw):
    dtype = draw(st.sampled_from(["float16", "float32", "float64", "int32", "uint8", "bool", "complex64",
                                  ">f4", "<f8"]))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    element = st.one_of(st.floats(-1e3, 1e3), st.sampled_from([np.nan, np.inf, -np.inf]))
    size = int(np.prod(shape))
    arr = np.asarray(draw(st.lists(element, min_size=size, max_size=size)))
    with np.errstate(invalid="ignore", over="ignore"):
        arr = arr.reshape(shape).astype(dtype)
    if draw(st.booleans()):
        arr = np.asfortranarray(arr)
    return arr


@settings(max_examples=50, **SETTINGS)
@given(arr=saved_arrays(), mmap=st.booleans(), data=st.data())
def test_load_array_round_trip_and_truncation(arr, mmap, data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("la")
    path = folder / "a.npy"
    np.save(path, arr)
    got = load_array(path, mmap=mmap)
    # same values; a non-native byte order comes back converted to the native one (issue 15 item 18)
    assert got.shape == arr.shape and got.dtype == arr.dtype.newbyteorder("=") and got.dtype.isnative
    assert np.array_equal(np.asarray(got), arr, equal_nan=arr.dtype.kind in "fc")
    tally("load_array round trip (dtypes, 0-3-D, empty, Fortran, mmap)", "ok")
    raw = path.read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    (folder / "cut.npy").write_bytes(raw[:cut])
    status, err = outcome_of(lambda: load_array(folder / "cut.npy", mmap=mmap, name="sims"))
    assert status == "error" and isinstance(err, InvalidInputError) and "cut.npy" in str(err)
    tally("load_array truncated file (header or data)", "error")


@settings(max_examples=60, **SETTINGS)
@given(flips=st.lists(st.tuples(st.integers(0, 127), st.integers(1, 255)), min_size=1, max_size=4),
       mmap=st.booleans())
def test_load_array_corrupt_header_bytes(flips, mmap, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hdr")
    path = folder / "a.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(3, 4))
    raw = bytearray(path.read_bytes())
    for pos, xor in flips:
        raw[pos] ^= xor
    path.write_bytes(bytes(raw))
    status, value = outcome_of(lambda: load_array(path, mmap=mmap))
    if status == "ok":
        assert isinstance(value, np.ndarray)
    tally("load_array corrupt header bytes", status)


@settings(max_examples=30, **SETTINGS)
@given(payload=st.binary(min_size=0, max_size=300), prefix=st.sampled_from([b"", b"\x93NUMPY", b"PK\x03\x04",
                                                                             b"\x93NUMPY\x01\x00"]))
def test_load_array_garbage(payload, prefix, tmp_path_factory):
    path = tmp_path_factory.mktemp("g") / "g.npy"
    path.write_bytes(prefix + payload)
    status, value = outcome_of(lambda: load_array(path))
    if status == "ok":  # only when the garbage happens to be a valid file
        assert isinstance(value, np.ndarray)
    tally("load_array random bytes", status)


def _npy_with_header(header: str, body: bytes = b"\0" * 16, version=(1, 0)) -> bytes:
    fmt = "<H" if version == (1, 0) else "<I"
    h = header.encode("latin1")
    h += b" " * (64 - (8 + struct.calcsize(fmt) + len(h) + 1) % 64) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(h)) + h + body


HOSTILE_HEADERS = {
    "huge shape": "{'descr': '<f4', 'fortran_order': False, 'shape': (10000000000, 10000000000), }",
    "huge 1-D": "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000,), }",
    "negative shape": "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 5), }",
    "unbalanced brackets": "[" * 3000,
    "unterminated string": "'abc",
    "code": "__import__('os').system('echo pwned')",
    "object field": "{'descr': [('a', 'O')], 'fortran_order': False, 'shape': (1,), }",
    "object dtype": "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }",
    "bad descr": "{'descr': '<zz', 'fortran_order': False, 'shape': (1,), }",
    "huge subarray": "{'descr': [('a', '<f4', (10000000, 10000000))], 'fortran_order': False, "
                     "'shape': (1,), }",
    "missing keys": "{'descr': '<f4'}",
    "not a dict": "(1, 2, 3)",
    "fortran not bool": "{'descr': '<f4', 'fortran_order': 'yes', 'shape': (1,), }",
    "huge int": "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "9" * 4000 + ",), }",
}


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("label", sorted(HOSTILE_HEADERS))
@pytest.mark.parametrize("mmap", [False, True])
def test_load_array_hostile_headers(tmp_path, label, version, mmap):
    path = tmp_path / "h.npy"
    path.write_bytes(_npy_with_header(HOSTILE_HEADERS[label], version=version))
    status, err = outcome_of(lambda: load_array(path, mmap=mmap, name="sims"))
    assert status == "error", label
    assert "h.npy" in str(err)
    if "object" in label:
        assert "pickled" in str(err)
    tally("load_array hostile .npy headers", status)


@pytest.mark.parametrize("kind", ["object array", "directory", "missing", "npz as npy", "zip not npz",
                                  "empty file", "text file"])
def test_load_array_odd_files(tmp_path, kind):
    path = tmp_path / "x.npy"
    if kind == "object array":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "directory":
        path.mkdir()
    elif kind == "npz as npy":
        with open(path, "wb") as fh:
            np.savez(fh, a=np.zeros(2))
    elif kind == "zip not npz":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.txt", "hello")
    elif kind == "empty file":
        path.write_bytes(b"")
    elif kind == "text file":
        path.write_text("1,2,3\n")
    status, err = outcome_of(lambda: load_array(path, name="sims"))
    assert status == "error" and "x.npy" in str(err)
    expected = InputFileError if kind in ("directory", "missing") else InvalidInputError
    assert isinstance(err, expected)
    tally("load_array odd files", status)


# ---------------------------------------------------------------------------------- Qrels files
@settings(max_examples=30, **SETTINGS)
@given(cut_fraction=st.floats(0, 0.999), flip=st.booleans(), data=st.data())
def test_qrels_load_truncated_or_corrupt(cut_fraction, flip, data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("q")
    good = folder / "q.npz"
    Qrels.from_lists([[0, 1], [2], [1, 3]], 4).save(good)
    raw = bytearray(good.read_bytes())
    if flip:
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= data.draw(st.integers(1, 255))
    else:
        raw = raw[: int(cut_fraction * len(raw))]
    (folder / "bad.npz").write_bytes(bytes(raw))
    status, value = outcome_of(lambda: Qrels.load(folder / "bad.npz", name="--positives-i2t"))
    if status == "ok":
        assert isinstance(value, Qrels)
    tally("Qrels.load truncated/corrupt .npz", status)


# ---------------------------------------------------------------------------------- loaders
@pytest.mark.parametrize("defect", ["none", "nan", "inf", "int sims", "1-D sims", "short map",
                                    "map out of range", "negative map", "image without caption",
                                    "float map", "2-D map", "cpi mismatch", "empty sims", "empty map"])
@settings(max_examples=4, **SETTINGS)
@given(data=st.data())
def test_load_retrieval_set_valid_or_clear_error(defect, data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rs")
    t2i, n_images = data.draw(caption_maps(max_images=4))
    n_texts = t2i.shape[0]
    sims = data.draw(tied_scores(n_images, n_texts))[0]
    cpi = None
    if defect in ("nan", "inf"):
        sims = sims.astype(np.float32)
        sims.flat[data.draw(st.integers(0, sims.size - 1))] = np.nan if defect == "nan" else np.inf
    elif defect == "int sims":
        sims = sims.astype(np.int64)
    elif defect == "1-D sims":
        sims = sims.ravel()
    elif defect == "empty sims":
        sims = np.zeros((0, n_texts), np.float32)
    if defect == "short map":
        t2i = t2i[:-1]
    elif defect == "map out of range":
        t2i = t2i.copy()
        t2i[0] = n_images
    elif defect == "negative map":
        t2i = t2i.copy()
        t2i[-1] = -1
    elif defect == "image without caption":
        t2i = np.where(t2i == 0, min(1, n_images - 1), t2i) if n_images > 1 else t2i[:0]
    elif defect == "float map":
        t2i = t2i.astype(np.float64)
    elif defect == "2-D map":
        t2i = t2i[None, :]
    elif defect == "empty map":
        t2i = t2i[:0]
    elif defect == "cpi mismatch":
        cpi = n_texts + 1
    np.save(folder / "s.npy", sims)
    np.save(folder / "m.npy", t2i)
    kwargs = {"captions_per_image": cpi} if cpi else {"txt_to_img": folder / "m.npy"}
    status, value = outcome_of(lambda: load_retrieval_set(sims=folder / "s.npy", mmap=True, **kwargs))
    assert (status == "ok") == (defect == "none"), defect
    if status == "ok":
        assert value.scores.shape == (n_images, n_texts)
        assert np.array_equal(value.txt_to_img, t2i)
    tally(f"load_retrieval_set ({defect})", status)


# ---------------------------------------------------------------------------------- CLI
def run_eval(*args):
    return CliRunner().invoke(cli, ["eval", *map(str, args)])


def assert_clean_failure(res, codes=(2, 3)):
    assert res.exit_code in codes, (res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), f"raw exception escaped: {res.exception!r}"
    assert "Traceback" not in res.output
    err_lines = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(err_lines) == 1, res.output


def _cli_file(folder: Path, kind: str, sims: np.ndarray) -> Path:
    path = folder / "sims.npy"
    if kind == "object array":
        np.save(path, np.array([[{"x": 1}]], dtype=object), allow_pickle=True)
    elif kind == "truncated header":
        np.save(path, sims)
        path.write_bytes(path.read_bytes()[:40])
    elif kind == "truncated data":
        np.save(path, sims)
        path.write_bytes(path.read_bytes()[:-3])
    elif kind == "hostile header":
        path.write_bytes(_npy_with_header(HOSTILE_HEADERS["huge shape"]))
    elif kind == "nan":
        bad = sims.astype(np.float32)
        bad[0, 0] = np.nan
        np.save(path, bad)
    elif kind == "inf":
        bad = sims.astype(np.float32)
        bad[-1, -1] = -np.inf
        np.save(path, bad)
    elif kind == "int dtype":
        with np.errstate(invalid="ignore", over="ignore"):
            np.save(path, sims.astype(np.int16))
    elif kind == "complex dtype":
        np.save(path, sims.astype(np.complex64))
    elif kind == "string dtype":
        np.save(path, sims.astype(str))
    elif kind == "empty":
        np.save(path, np.zeros((0, 0), np.float32))
    elif kind == "1-D":
        np.save(path, sims.ravel())
    elif kind == "garbage":
        path.write_bytes(b"\x00\x01garbage" * 10)
    else:
        np.save(path, sims)
    return path


CLI_FILE_DEFECTS = ["object array", "truncated header", "truncated data", "hostile header", "nan", "inf",
                    "int dtype", "complex dtype", "string dtype", "empty", "1-D", "garbage"]
CLI_MAP_DEFECTS = ["short map", "out of range", "negative", "float map", "missing image", "object map",
                   "2-D map", "cpi mismatch"]


@pytest.mark.parametrize("where, defect", [("sims", d) for d in CLI_FILE_DEFECTS]
                         + [("map", d) for d in CLI_MAP_DEFECTS])
@settings(max_examples=3, **SETTINGS)
@given(data=st.data())
def test_eval_cli_hostile_files(where, defect, data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    t2i, n_images = data.draw(caption_maps(max_images=4))
    sims = data.draw(tied_scores(n_images, t2i.shape[0]))[0]
    path = _cli_file(folder, defect if where == "sims" else "valid", sims)
    map_path = folder / "map.npy"
    extra: list = ["--txt2img", map_path]
    if defect == "short map":
        np.save(map_path, t2i[1:])
    elif defect == "out of range":
        np.save(map_path, np.concatenate([t2i[:-1], [n_images + 7]]))
    elif defect == "negative":
        np.save(map_path, np.concatenate([[-1], t2i[1:]]))
    elif defect == "float map":
        np.save(map_path, t2i.astype(np.float32))
    elif defect == "missing image":
        np.save(map_path, np.full_like(t2i, n_images - 1) if n_images > 1 else t2i[:0])
    elif defect == "object map":
        np.save(map_path, np.array([None] * t2i.shape[0], dtype=object), allow_pickle=True)
    elif defect == "2-D map":
        np.save(map_path, t2i[:, None])
    elif defect == "cpi mismatch":
        extra = ["--captions-per-image", t2i.shape[0] + 1]
    else:
        np.save(map_path, t2i)
    res = run_eval(path, *extra, "-m", "i2t_R@1")
    assert_clean_failure(res, codes=(2,))
    assert ("sims" in res.output or "map" in res.output or "txt_to_img" in res.output
            or "captions_per_image" in res.output), res.output
    if defect == "object array" or defect == "object map":
        assert "pickled" in res.output
    tally(f"rerank eval hostile {where} ({defect})", f"exit {res.exit_code}")


@settings(max_examples=25, **SETTINGS)
@given(data=st.data())
def test_eval_cli_valid_inputs_match_oracle(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cliok")
    t2i, n_images = data.draw(caption_maps(max_images=5))
    sims, kind = data.draw(tied_scores(n_images, t2i.shape[0]))
    np.save(folder / "s.npy", sims)
    np.save(folder / "m.npy", t2i)
    res = run_eval(folder / "s.npy", "--txt2img", folder / "m.npy", "-m", "i2t_R@1", "-m", "t2i_R@1",
                   "--json", folder / "out.json")
    assert res.exit_code == 0, res.output
    want = oracle_metrics(sims, t2i, n_images)
    got = json.loads((folder / "out.json").read_text())["metrics"]
    for name in ("i2t_R@1", "t2i_R@1"):
        assert got[name] == pytest.approx(want[name])
    # K beyond the gallery at the CLI: exit 2, one line naming the gallery size
    res = run_eval(folder / "s.npy", "--txt2img", folder / "m.npy", "-m", f"t2i_R@{n_images + 1}")
    assert_clean_failure(res, codes=(2,))
    assert "n_gallery" in res.output
    tally("rerank eval valid (ties, dtypes, magnitudes, Fortran)", "exit 0, equals oracle")
    tally("rerank eval k > gallery", "exit 2")


@pytest.mark.parametrize("case", ["missing sims", "missing map", "sims is a directory", "json over input",
                                  "json exists", "json folder missing", "unknown metric", "bad folds",
                                  "no ground truth", "both ground truths", "unknown option"])
def test_eval_cli_usage_and_io_errors(tmp_path, case):
    sims = np.eye(3, 6, dtype=np.float32)
    np.save(tmp_path / "s.npy", sims)
    np.save(tmp_path / "m.npy", np.repeat(np.arange(3), 2))
    s, m = tmp_path / "s.npy", tmp_path / "m.npy"
    args, code, needle = {
        "missing sims": ([tmp_path / "none.npy", "--txt2img", m], 3, "none.npy"),
        "missing map": ([s, "--txt2img", tmp_path / "nomap.npy"], 3, "nomap.npy"),
        # not a file: an I/O failure (3) like a missing file, named by the loader
        "sims is a directory": ([tmp_path, "--captions-per-image", 2], 3, "got a directory"),
        "json over input": ([s, "--txt2img", m, "--json", m, "--overwrite"], 3, "input file"),
        "json exists": ([s, "--txt2img", m, "--json", m], 3, "m.npy"),
        "json folder missing": ([s, "--txt2img", m, "--json", tmp_path / "no" / "o.json"], 3,
                                "does not exist"),
        "unknown metric": ([s, "--txt2img", m, "-m", "i2t_R@0"], 2, "not supported"),
        "bad folds": ([s, "--txt2img", m, "--folds", 2, "-m", "i2t_R@1"], 2, "folds"),
        "no ground truth": ([s], 2, "--txt2img"),
        "both ground truths": ([s, "--txt2img", m, "--captions-per-image", 2], 2, "exactly one"),
        "unknown option": ([s, "--bogus"], 2, "--bogus"),
    }[case]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    res = run_eval(*args)
    assert_clean_failure(res, codes=(code,))
    assert needle in res.output, res.output
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # nothing written, nothing overwritten
    tally(f"rerank eval usage/io ({case})", f"exit {code}")


@pytest.mark.parametrize("option", ["--positives-i2t", "--positives-t2i", "--graded"])
@pytest.mark.parametrize("defect", ["text file", "truncated", "pickled object", "missing key", "extra key",
                                    "float ids", "ids out of range", "wrong size", "single .npy",
                                    "nan gains", "negative gains"])
def test_eval_cli_hostile_judgement_files(tmp_path, option, defect):
    n_img, n_txt = 4, 8
    np.save(tmp_path / "s.npy", np.random.default_rng(0).random((n_img, n_txt)).astype(np.float32))
    path = tmp_path / "j.npz"
    graded = option == "--graded"
    if graded:
        good = {"image": np.array([0, 1, 2]), "text": np.array([0, 2, 4]), "gain": np.array([1.0, 2.0, 3.0])}
    else:
        n_q, n_g = (n_img, n_txt) if option == "--positives-i2t" else (n_txt, n_img)
        good = {"indptr": np.arange(n_q + 1), "indices": np.arange(n_q) % n_g, "n_gallery": np.int64(n_g)}
    arrays = dict(good)
    ids = "image" if graded else "indices"
    if defect == "missing key":
        arrays.pop(ids)
    elif defect == "extra key":
        arrays["evil"] = np.zeros(1)
    elif defect == "float ids":
        arrays[ids] = arrays[ids].astype(np.float64)
    elif defect == "ids out of range":
        arrays[ids] = arrays[ids] + 100
    elif defect == "wrong size":
        if graded:
            arrays["gain"] = arrays["gain"][:-1]
        else:
            arrays["n_gallery"] = np.int64(good["n_gallery"] + 1)
    elif defect == "nan gains":
        arrays["gain" if graded else "gains"] = np.full(len(arrays[ids]), np.nan)
    elif defect == "negative gains":
        arrays["gain" if graded else "gains"] = -np.ones(len(arrays[ids]))
    if defect == "text file":
        path.write_text("indptr,indices\n0,1\n")
    elif defect == "pickled object":
        arrays[ids] = np.array([None, {"x": 1}], dtype=object)
        np.savez(path, **arrays)
    elif defect == "single .npy":
        with open(path, "wb") as fh:
            np.save(fh, np.arange(3))
    else:
        np.savez(path, **arrays)
    if defect == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    res = run_eval(tmp_path / "s.npy", "--captions-per-image", 2, option, path)
    assert_clean_failure(res, codes=(2,))
    assert "j.npz" in res.output or option in res.output or "graded" in res.output, res.output
    if defect == "pickled object":
        assert "pickled" in res.output
    tally(f"rerank eval hostile judgement file ({defect})", "exit 2")


# ---------------------------------------------------------------------------------- data set loaders
def _fake_proxy_root(root: Path, *, n_img: int = 3, caps: int = 2, d: int = 4
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A miniature caption_xenc folder with the files the COCO proxy loaders read."""
    root.mkdir(exist_ok=True)
    (root / "README.md").write_text("fake\n")
    rng = np.random.default_rng(0)
    n_txt = n_img * caps
    np.save(root / "proxy_coco5k_test_img.npy", rng.standard_normal((n_img, d)).astype(np.float16))
    np.save(root / "coco5k_test_minilm.npy", rng.standard_normal((n_txt + 2, d)).astype(np.float16))
    np.save(root / "proxy_coco5k_test_txt_index.npy", np.arange(n_txt))
    np.save(root / "proxy_coco5k_test_cap2img.npy", np.repeat(np.arange(n_img), caps))
    image_ids, caption_ids = np.arange(100, 100 + n_img), np.arange(500, 502 + n_txt)
    np.save(root / "coco5k_test_image_ids.npy", image_ids)
    np.save(root / "coco5k_test_caption_ids.npy", caption_ids)
    (root / "eccv_caption_labels").mkdir(exist_ok=True)
    (root / "eccv_caption_labels" / "eccv_image_to_caption.json").write_text(json.dumps({"100": [500, 501]}))
    (root / "eccv_caption_labels" / "eccv_caption_to_image.json").write_text(json.dumps({"500": [100]}))
    (root / "cxc").mkdir(exist_ok=True)
    (root / "cxc" / "sits_test.csv").write_text(
        "caption,image,agg_score\nsentid:500,COCO_val2014_000000000100.jpg,4.5\n")
    return image_ids, caption_ids[:n_txt]


def _eccv(text: str | bytes):
    def damage(path: Path) -> None:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return "eccv_caption_labels/eccv_image_to_caption.json", damage


def _cxc(text: str | bytes):
    def damage(path: Path) -> None:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return "cxc/sits_test.csv", damage


CXC_HEAD = "caption,image,agg_score\n"
DATASET_DEFECTS = {
    "index negative": ("proxy_coco5k_test_txt_index.npy", lambda r: np.save(r, np.r_[0:5, -1])),
    "index past the table": ("proxy_coco5k_test_txt_index.npy", lambda r: np.save(r, np.arange(6) + 5)),
    "index float": ("proxy_coco5k_test_txt_index.npy", lambda r: np.save(r, np.arange(6.0))),
    "map out of range": ("proxy_coco5k_test_cap2img.npy", lambda r: np.save(r, np.array([0, 0, 1, 1, 2, 9]))),
    "gallery truncated": ("proxy_coco5k_test_img.npy", lambda r: r.write_bytes(r.read_bytes()[:-7])),
    "gallery pickled": ("proxy_coco5k_test_img.npy",
                        lambda r: np.save(r, np.array([None], dtype=object), allow_pickle=True)),
    "gallery NaN": ("proxy_coco5k_test_img.npy", lambda r: np.save(r, np.full((3, 4), np.nan, np.float16))),
    "eccv not JSON": _eccv("{oops"),
    "eccv a list": _eccv("[1, 2]"),
    "eccv bad ids": _eccv(json.dumps({"abc": [500]})),
    "eccv items not a list": _eccv(json.dumps({"100": 500})),
    "eccv binary": _eccv(b"\xff\xfe\x00"),
    "cxc score not a number": _cxc(f"{CXC_HEAD}sentid:500,COCO_val2014_000000000100.jpg,high\n"),
    "cxc score NaN": _cxc(f"{CXC_HEAD}sentid:500,COCO_val2014_000000000100.jpg,nan\n"),
    "cxc missing column": _cxc("caption,image\nsentid:500,x.jpg\n"),
    "cxc short row": _cxc("caption,image,agg_score\nsentid:500\n"),
    "cxc binary": _cxc(b"caption,image,agg_score\n\xff\xfe\n"),
}


@pytest.mark.parametrize("defect", list(DATASET_DEFECTS))
def test_coco_proxy_loaders_on_damaged_files(tmp_path, defect):
    from pillar_rerank.datasets import coco_proxy_ids, load_coco_proxy, load_cxc_graded, load_eccv_positives

    image_ids, caption_ids = _fake_proxy_root(tmp_path)
    # the intact folder loads
    data = load_coco_proxy(root=tmp_path)
    assert (data.n_images, data.n_texts) == (3, 6)
    assert load_eccv_positives(image_ids, caption_ids, root=tmp_path)["i2t"].n_queries == 3
    assert load_cxc_graded(image_ids, caption_ids, root=tmp_path)["i2t"].gains.tolist() == [4.5]
    name, damage = DATASET_DEFECTS[defect]
    damage(tmp_path / name)
    loaders = {
        "proxy": lambda: load_coco_proxy(root=tmp_path),
        "ids": lambda: coco_proxy_ids(root=tmp_path),
        "eccv": lambda: load_eccv_positives(image_ids, caption_ids, root=tmp_path),
        "cxc": lambda: load_cxc_graded(image_ids, caption_ids, root=tmp_path),
    }
    outcomes = {k: outcome_of(fn)[0] for k, fn in loaders.items()}  # a raw exception fails here
    assert "error" in outcomes.values(), outcomes
    tally(f"COCO proxy loaders ({defect})", "error")


# ---------------------------------------------------------------------------------- file types
@pytest.mark.parametrize("command", ["eval", "fit", "baseline", "tune", "report"])
@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_cli_refuses_non_regular_input_files_with_exit_3(tmp_path, command, kind):
    """Issue 15 item 10: a FIFO input blocked forever; a directory exited 2 where a missing file exits 3.

    Every input that is not a regular file is an I/O failure (exit 3), named, before it is opened.
    A blocked open() is ended by the 60 s guard (``_no_hang``) as a TimeoutError.
    """
    sims = tmp_path / "sims.npy"
    if kind == "fifo":
        os.mkfifo(sims)
    elif kind == "device":
        sims.symlink_to("/dev/zero")
    else:
        sims.mkdir()
    out = tmp_path / "out"
    args = {
        "eval": ["eval", sims, "--captions-per-image", 2],
        "fit": ["fit", "--sims", sims, "--captions-per-image", 2, "-o", out, "--epochs", 1],
        "baseline": ["baseline", "dsl", "--sims", sims, "--captions-per-image", 2, "-o", f"{out}.npz"],
        "tune": ["tune", "dsl", "--dev-sims", sims, "--dev-captions-per-image", 2],
        "report": ["report", "--sims", sims, "--captions-per-image", 2, "-o", f"{out}.html"],
    }[command]
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert_clean_failure(res, codes=(3,))
    assert "sims.npy" in res.output
    assert ("not a regular file" if kind != "directory" else "got a directory") in res.output, res.output
    tally(f"rerank {command} non-regular input ({kind})", "exit 3")


@pytest.mark.parametrize("command", ["eval", "baseline"])
def test_cli_unreadable_input_exits_3(tmp_path, monkeypatch, command):
    """Issue 15 item 18: an unreadable input exited 2 (click's readability check); I/O failures exit 3.

    Tests run as root here, where chmod cannot make a file unreadable: the denial is simulated at
    both places a read permission is looked at (``os.access`` and opening the file).
    """
    import builtins
    import io

    sims = tmp_path / "sims.npy"
    np.save(sims, np.eye(3, 6, dtype=np.float32))
    real_open, real_access = io.open, os.access

    def no_read(file, *args, **kwargs):
        if str(file) == str(sims):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(sims)
                        else real_access(p, mode, *a, **k))
    monkeypatch.setattr(io, "open", no_read)
    monkeypatch.setattr(builtins, "open", no_read)
    args = {"eval": ["eval", sims, "--captions-per-image", 2],
            "baseline": ["baseline", "dsl", "--sims", sims, "--captions-per-image", 2,
                         "-o", tmp_path / "o.npz"]}[command]
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert_clean_failure(res, codes=(3,))
    assert "sims.npy" in res.output and "Permission denied" in res.output, res.output


@pytest.mark.parametrize("map_dtype, sims_dtype", [(">i8", "<f4"), ("<i8", ">f4"), (">i4", ">f8")])
def test_cli_big_endian_maps_and_matrices_are_both_accepted(tmp_path, map_dtype, sims_dtype):
    """Issue 15 item 18: both byte orders work, for maps and for float matrices, with equal results."""
    rng = np.random.default_rng(0)
    sims = rng.standard_normal((12, 24)).astype(np.float32)
    np.save(tmp_path / "native.npy", sims)
    np.save(tmp_path / "sims.npy", sims.astype(sims_dtype))
    np.save(tmp_path / "map.npy", np.repeat(np.arange(12), 2).astype(map_dtype))
    outs = []
    for name in ("native", "sims"):
        res = run_eval(tmp_path / f"{name}.npy", "--txt2img", tmp_path / "map.npy", "--json",
                       tmp_path / f"{name}.json")
        assert res.exit_code == 0, res.output
        outs.append(json.loads((tmp_path / f"{name}.json").read_text())["metrics"])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("value", ["inf", "1e400GB", "-inf", "nan", "NaNGB", "1e30TB", "0", "-1GB", "4XB"])
@pytest.mark.parametrize("command", ["fit", "apply", "cache"])
def test_cli_max_memory_overflow_and_nonsense_exit_2(tmp_path, command, value):
    """Issue 15 item 12: `--max-memory inf` / `1e400GB` overflowed with a traceback (exit 1)."""
    args = {"fit": ["fit", "--sims", tmp_path / "s.npy", "--captions-per-image", 2, "-o", tmp_path / "m"],
            "apply": ["apply", tmp_path / "model", "--sims", tmp_path / "s.npy", "--captions-per-image", 2,
                      "-o", tmp_path / "o.npy"],
            "cache": ["cache", tmp_path / "model", "--sims", tmp_path / "s.npy", "--captions-per-image", 2,
                      "--cache", tmp_path / "c"]}[command]
    res = CliRunner().invoke(cli, [*map(str, args), "--max-memory", value])
    assert_clean_failure(res, codes=(2,))
    assert "--max-memory" in res.output and value in res.output, res.output


@pytest.mark.parametrize("value", ["inf", "1e400GB", "nan", "1e30TB"])
def test_parse_bytes_refuses_non_finite_and_absurd_sizes(value):
    from pillar_rerank.utils.blocks import parse_bytes

    with pytest.raises(InvalidInputError, match="memory size"):
        parse_bytes(value)


# ---------------------------------------------------------------------------------- shards (merge)
def _valid_shards(n_images=6, n_texts=12, count=2, k=3, seed=0):
    """Shards as `rerank apply --shard i/n` writes them: each share's queries x k candidates."""
    from pillar_rerank.sharding import ShardResult, shard_range

    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        imgs = np.arange(n_images)[shard_range(n_images, index, count)]
        txts = np.arange(n_texts)[shard_range(n_texts, index, count)]
        i2t_cols = np.stack([rng.choice(n_texts, k, replace=False) for _ in imgs]).reshape(-1)
        t2i_rows = np.stack([rng.choice(n_images, k, replace=False) for _ in txts]).reshape(-1)
        out.append(ShardResult(index, count, n_images, n_texts, "digest",
                               i2t_rows=np.repeat(imgs, k), i2t_cols=i2t_cols,
                               i2t_values=rng.standard_normal(imgs.size * k).astype(np.float32),
                               t2i_rows=t2i_rows, t2i_cols=np.repeat(txts, k),
                               t2i_values=rng.standard_normal(txts.size * k).astype(np.float32)))
    return out


def _forge(path: Path, **changes) -> None:
    with np.load(path, allow_pickle=False) as z:
        fields = {k: z[k] for k in z.files}
    fields.update(changes)
    with open(path, "wb") as fh:
        np.savez(fh, **fields)


SHARD_FORGERIES = {
    "negative row": (lambda f: {"i2t_rows": np.where(np.arange(f["i2t_rows"].size) == 0, -1, f["i2t_rows"])},
                     "i2t_rows"),
    "row past n_images": (lambda f: {"t2i_rows": f["t2i_rows"] + 6}, "t2i_rows"),
    "col past n_texts": (lambda f: {"i2t_cols": f["i2t_cols"] + 12}, "i2t_cols"),
    "query outside its share": (lambda f: {"i2t_rows": (f["i2t_rows"] + 3) % 6}, "share"),
    "nan value": (lambda f: {"t2i_values": np.full_like(f["t2i_values"], np.nan)}, "finite"),
    "inf value": (lambda f: {"i2t_values": np.full_like(f["i2t_values"], np.inf)}, "finite"),
    "forged count": (lambda f: {"count": np.int64(10**9)}, "count"),
    "negative count": (lambda f: {"count": np.int64(-2)}, "count"),
    "index past count": (lambda f: {"index": np.int64(7)}, "index"),
    "float rows": (lambda f: {"i2t_rows": f["i2t_rows"].astype(np.float64)}, "integer"),
    "int values": (lambda f: {"i2t_values": f["i2t_values"].astype(np.int64)}, "float"),
    "2-D rows": (lambda f: {"i2t_rows": f["i2t_rows"].reshape(1, -1)}, "i2t rows"),
    "string count": (lambda f: {"count": np.str_("2")}, "count"),
    "array count": (lambda f: {"count": np.array([2, 2])}, "count"),
    "duplicate entry": (lambda f: {"i2t_cols": np.where(np.arange(f["i2t_cols"].size) == 1, f["i2t_cols"][0],
                                                        f["i2t_cols"])}, "twice"),
    "huge n_images": (lambda f: {"n_images": np.int64(10**12)}, "n_images"),
}


@pytest.mark.parametrize("forgery", list(SHARD_FORGERIES))
def test_merge_refuses_forged_shards(tmp_path, forgery):
    """Issue 15 item 15: negative ids wrapped, NaN was merged, a forged count exhausted memory."""
    from pillar_rerank.sharding import merge_shards

    shards = _valid_shards()
    paths = [s.save(tmp_path / f"s{i}.npz") for i, s in enumerate(shards)]
    base = np.random.default_rng(1).standard_normal((6, 12)).astype(np.float32)
    good = merge_shards(base, paths)
    assert np.isfinite(good).all()
    change, needle = SHARD_FORGERIES[forgery]
    with np.load(paths[1], allow_pickle=False) as z:
        fields = {k: z[k] for k in z.files}
    _forge(paths[1], **change(fields))
    status, err = outcome_of(lambda: merge_shards(base, paths))
    assert status == "error", f"{forgery}: merged a forged shard"
    assert isinstance(err, InvalidInputError) and "s1.npz" in str(err), repr(err)
    assert needle in str(err), str(err)
    tally(f"merge forged shard ({forgery})", "error")


def test_merge_refuses_forged_in_memory_shards():
    from dataclasses import replace

    from pillar_rerank.sharding import merge_shards

    shards = _valid_shards()
    bad = replace(shards[0], i2t_rows=shards[0].i2t_rows - 10)
    with pytest.raises(InvalidInputError, match="i2t_rows"):
        merge_shards(np.zeros((6, 12), np.float32), [bad, shards[1]])
