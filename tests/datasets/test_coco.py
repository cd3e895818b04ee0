import numpy as np
import pytest
from click.testing import CliRunner
from pillar_rerank.cli.main import cli

from pillar_rerank.datasets import (
    coco_proxy_ids,
    load_coco_proxy,
    load_cxc_graded,
    load_eccv_positives,
    shared_data_root,
)
from pillar_rerank.exceptions import InputFileError, InvalidParameterError
from pillar_rerank.metrics import evaluate

# README of caption_xenc: optimistic / pessimistic tie rules on coco5k_test
README_RANGE = {
    "i2t_R@1": (16.2, 16.3), "i2t_R@5": (37.3, 37.4), "i2t_R@10": (47.8, 47.9),
    "t2i_R@1": (20.8, 20.9), "t2i_R@5": (42.1, 42.2), "t2i_R@10": (53.5, 53.5),
}


def test_missing_root_is_a_clear_io_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PILLAR_RERANK_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(InputFileError, match="caption_xenc folder not found.*PILLAR_RERANK_SHARED_DATA"):
        load_coco_proxy()
    with pytest.raises(InvalidParameterError, match="split"):
        load_coco_proxy("coco10k")


@pytest.fixture(scope="module")
def proxy5k(shared_data):
    return load_coco_proxy("coco5k_test", shared_data)


@pytest.fixture(scope="module")
def sims5k(proxy5k):
    """The same set with its score matrix computed once (evaluate would multiply every time)."""
    return proxy5k.with_scores(proxy5k.similarity())


def _assert_in_readme_range(results):
    for name, (pessimistic, optimistic) in README_RANGE.items():
        assert pessimistic - 0.05 <= results[name] <= optimistic + 0.05, (name, results[name])


@pytest.mark.shared_data
def test_5k_proxy_reproduces_the_readme_recalls(proxy5k, sims5k, shared_data, monkeypatch):
    assert (proxy5k.n_images, proxy5k.n_texts) == (5000, 20000)
    assert proxy5k.image_embeddings.dtype == np.float16 and proxy5k.scores is None
    results = evaluate(sims5k)
    _assert_in_readme_range(results)
    assert results["RSUM"] == pytest.approx(217.86, abs=0.01)
    fold0 = evaluate(sims5k.subset_images(np.arange(1000)))
    assert fold0["RSUM"] == pytest.approx(363.45, abs=0.05)
    monkeypatch.setenv("PILLAR_RERANK_SHARED_DATA", str(shared_data))
    assert shared_data_root() == shared_data
    dev = evaluate(load_coco_proxy("coco1k_dev"))
    assert round(dev["i2t_R@1"], 1) == 45.0 and round(dev["t2i_R@10"], 2) == 87.75


@pytest.mark.shared_data
def test_5k_proxy_through_the_cli_as_embeddings_and_matrix(sims5k, tmp_path):
    np.save(tmp_path / "img.npy", sims5k.image_embeddings)
    np.save(tmp_path / "txt.npy", sims5k.text_embeddings)
    np.save(tmp_path / "map.npy", sims5k.txt_to_img)
    res = CliRunner().invoke(cli, ["eval", "--image-emb", str(tmp_path / "img.npy"), "--text-emb",
                                   str(tmp_path / "txt.npy"), "--txt2img", str(tmp_path / "map.npy")])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split()[1:4] for line in res.output.splitlines()[2:4]}
    _assert_in_readme_range({f"{d}_R@{k}": float(rows[d][i]) for d in ("i2t", "t2i")
                             for i, k in enumerate((1, 5, 10))})
    fold0 = sims5k.subset_images(np.arange(1000))  # the matrix route, on COCO 1K fold 0
    np.save(tmp_path / "sims.npy", fold0.scores)
    np.save(tmp_path / "map0.npy", fold0.txt_to_img)
    res = CliRunner().invoke(cli, ["eval", str(tmp_path / "sims.npy"),
                                   "--txt2img", str(tmp_path / "map0.npy")])
    # 363.43 or 363.45: a BLAS-dependent tie between duplicate vectors (see tests/datasets/test_demo.py)
    assert res.exit_code == 0 and res.output.split("RSUM")[1].split()[0] in ("363.43", "363.45"), res.output


@pytest.mark.shared_data
def test_coco_1k_protocol_averages_five_different_folds(sims5k):
    folds = [evaluate(sims5k.subset_images(np.arange(f * 1000, (f + 1) * 1000)))["RSUM"] for f in range(5)]
    assert len(set(np.round(folds, 3))) == 5
    assert evaluate(sims5k, folds=5)["RSUM"] == pytest.approx(np.mean(folds))


@pytest.mark.shared_data
def test_eccv_and_cxc_labels_join_on_coco_ids(proxy5k, shared_data):
    image_ids, caption_ids = coco_proxy_ids("coco5k_test", shared_data)
    assert image_ids.shape == (5000,) and caption_ids.shape == (20000,)
    eccv = load_eccv_positives(image_ids, caption_ids, root=shared_data)
    assert eccv["i2t"].n_queries == 5000 and eccv["t2i"].n_queries == 20000
    assert int((eccv["i2t"].counts > 0).sum()) == 1261  # the annotated ECCV Caption images
    # every annotated caption query keeps its original image among its ECCV positives
    t2i = eccv["t2i"]
    judged = np.flatnonzero(t2i.counts > 0)
    for q in judged[:50]:
        assert proxy5k.txt_to_img[q] in t2i.indices[t2i.indptr[q]:t2i.indptr[q + 1]]
    original = load_eccv_positives(image_ids, caption_ids, kind="original", root=shared_data)
    assert np.array_equal(original["t2i"].indices, proxy5k.txt_to_img)
    assert np.array_equal(original["i2t"].indices, proxy5k.relevance.indices)
    graded = load_cxc_graded(image_ids, caption_ids, root=shared_data)
    assert graded["t2i"].gains.min() >= 0 and graded["t2i"].gains.max() <= 5
    assert graded["i2t"].gains.size == graded["t2i"].gains.size
    fold0 = proxy5k.subset_images(np.arange(1000))
    caps = np.flatnonzero(proxy5k.txt_to_img < 1000)
    images = np.arange(1000)
    res = evaluate(fold0, metrics=["i2t_mAP@R", "t2i_R-P", "t2i_NDCG@10"],
                   positives={"i2t": eccv["i2t"].subset(images, caps),
                              "t2i": eccv["t2i"].subset(caps, images)},
                   graded={"t2i": graded["t2i"].subset(caps, images)})
    assert all(0 < v < 100 for v in res.values())
    with pytest.raises(InvalidParameterError, match="kind"):
        load_eccv_positives(image_ids, caption_ids, kind="coco", root=shared_data)
