import json
import os
from pathlib import Path

import numpy as np
import pytest

from pillar_rerank.datasets import f30k_build_info, load_f30k_proxy
from pillar_rerank.exceptions import InputFileError, InvalidInputError, InvalidParameterError
from pillar_rerank.metrics import recall_metrics

F30K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "f30k_xenc"


def write_cache(path, n=6, d=4, **override):
    """A tiny training-side cache laid out like build_train.py's output."""
    rng = np.random.default_rng(0)
    files = {
        "proxy_f30k_train_img.npy": rng.normal(size=(n, d)).astype(np.float16),
        "proxy_f30k_train_txt.npy": rng.normal(size=(4 * n, d)).astype(np.float16),
        "proxy_f30k_train_cap2img.npy": np.repeat(np.arange(n, dtype=np.int32), 4),
    }
    files.update(override)
    path.mkdir(exist_ok=True)
    for name, arr in files.items():
        np.save(path / name, arr)
    (path / "build.json").write_text(json.dumps({"n_images": n, "n_texts": 4 * n}))
    return path


def test_synthetic_cache_loads(tmp_path):
    data = load_f30k_proxy("f30k_train", cache=write_cache(tmp_path / "c"))
    assert (data.n_images, data.n_texts) == (6, 24)
    assert data.image_embeddings.dtype == np.float16
    assert f30k_build_info(tmp_path / "c")["n_images"] == 6


def test_missing_files_name_the_build_command(tmp_path, monkeypatch):
    with pytest.raises(InputFileError, match="missing proxy_f30k_train_img.npy.*build_train.py"):
        load_f30k_proxy("f30k_train", cache=tmp_path)
    monkeypatch.setenv("PILLAR_RERANK_F30K_CACHE", str(tmp_path / "env"))
    with pytest.raises(InputFileError, match=str(tmp_path / "env")):
        load_f30k_proxy("f30k_train")
    with pytest.raises(InvalidParameterError, match="split"):
        load_f30k_proxy("f30k_test")
    monkeypatch.setenv("PILLAR_RERANK_F30K_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(InputFileError, match="f30k_xenc folder not found.*PILLAR_RERANK_F30K_DATA"):
        load_f30k_proxy("f30k_dev")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"proxy_f30k_train_txt.npy": np.zeros((23, 4), np.float16)}, "one row per entry of cap2img"),
        ({"proxy_f30k_train_img.npy": np.full((6, 4), np.nan, np.float16)}, "NaN"),
        ({"proxy_f30k_train_img.npy": np.zeros((6, 5), np.float16)}, "384|dim|shape|columns"),
        ({"proxy_f30k_train_cap2img.npy": np.repeat(np.arange(6, dtype=np.int32), 4) + 1}, "past n_images"),
        ({"proxy_f30k_train_cap2img.npy": np.repeat(np.arange(6), 4).astype(np.float32)}, "integer"),
    ],
    ids=["txt-rows", "nan", "dims", "cap2img-range", "cap2img-dtype"],
)
def test_bad_files_are_refused(tmp_path, override, match):
    write_cache(tmp_path, **override)
    with pytest.raises(InvalidInputError, match=match):
        load_f30k_proxy("f30k_train", cache=tmp_path)


def test_corrupt_partial_and_mismatched_builds(tmp_path):
    write_cache(tmp_path)
    (tmp_path / "proxy_f30k_train_img.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(InvalidInputError, match="proxy_f30k_train_img.npy.*not a valid .npy"):
        load_f30k_proxy("f30k_train", cache=tmp_path)
    write_cache(tmp_path)
    (tmp_path / "build.json").write_text(json.dumps({"n_images": 7, "n_texts": 28}))
    with pytest.raises(InvalidInputError, match="build.json says 7 x 28 but the files hold 6 x 24"):
        load_f30k_proxy("f30k_train", cache=tmp_path)
    (tmp_path / "build.json").write_text("[1, 2]")
    with pytest.raises(InvalidInputError, match="positive integer 'n_images'"):
        load_f30k_proxy("f30k_train", cache=tmp_path)
    write_cache(tmp_path)
    with pytest.raises(InvalidInputError, match="holds 6 items.*--limit"):
        load_f30k_proxy("f30k_train", cache=tmp_path, min_images=29_000)


@pytest.mark.shared_data
def test_real_dev_split_reproduces_the_readme():
    if not (F30K / "proxy_f30k_dev_img.npy").is_file() and not os.environ.get("PILLAR_RERANK_F30K_DATA"):
        pytest.skip("shared data ../shared/data/f30k_xenc not found (set PILLAR_RERANK_F30K_DATA)")
    dev = load_f30k_proxy("f30k_dev")
    assert (dev.n_images, dev.n_texts) == (1014, 4056)
    m = recall_metrics(dev.similarity(), dev.relevance)
    assert m["RSUM"] == pytest.approx(471.5, abs=0.05)  # README: plain cosine, stable ties
    assert round(m["i2t_R@1"], 1) == 65.4 and round(m["t2i_R@1"], 1) == 59.0


@pytest.mark.shared_data
def test_real_training_cache_when_built():
    try:
        info = f30k_build_info()
    except InputFileError as exc:
        pytest.skip(f"f30k_train cache not built ({exc})")
    train = load_f30k_proxy("f30k_train")
    assert (train.n_images, train.n_texts) == (info["n_images"], 4 * info["n_images"])
    k = min(1000, train.n_images)
    first = train.subset_images(np.arange(k))
    m = recall_metrics(first.similarity(), first.relevance)
    assert m["RSUM"] == pytest.approx(info[f"first_{k}_items_plain_cosine"]["RSUM"], abs=0.01)
