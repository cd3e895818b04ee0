import pytest

from benchmarks import BenchmarkSkipped
from benchmarks.leaprr_f30k import load_sides, summarize
from benchmarks.suites import get_suite

KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "RSUM")


def _rec(rsum):
    return {**dict.fromkeys(KEYS[:-1], 10.0), "RSUM": rsum}


def _figures(seed, shift):
    tests = ("f30k_holdout", "coco5k_test")
    leaprr = {
        v: {"normalize": n, "config": {"embed_dim": 64, "epochs": 4}, "fit_s": 10.0,
            "tests": {t: {"fused": _rec(310 + shift), "overwrite": _rec(290 + shift)} for t in tests}}
        for v, n in (("alone", None), ("best", "nnn"), ("dsl", "dsl"))
    }
    return {
        "seed": seed, "train_items": 4000, "leaprr": leaprr,
        "evaluation": {t: {"base": _rec(300.0), "methods": {
            "nnn": {**_rec(305 + shift), "transductive": False},
            "dsl": {**_rec(320 + shift), "transductive": True}}} for t in tests},
    }


def test_summary_lists_every_method_and_both_combinations():
    runs = [{"figures": _figures(0, 0.0)}, {"figures": _figures(1, 2.0)}]
    tables = summarize(runs, None)["tables"]
    assert tables[0]["headline"]
    detail = tables[1]
    methods = [r[0] for r in detail["rows"]]
    assert methods == ["base", "nnn (tuned per direction)", "dsl (tuned per direction)",
                       "LeaPRR (overwrite, reference)", "LeaPRR + fusion",
                       "nnn -> LeaPRR (overwrite, reference)", "nnn -> LeaPRR + fusion",
                       "dsl -> LeaPRR (overwrite, reference)", "dsl -> LeaPRR + fusion"]
    assert "embed_dim=64" in detail["notes"] and "seeds [0, 1]" in detail["notes"]
    assert len(tables) == 3  # headline + one per test set


def test_missing_training_cache_skips_with_the_build_command(tmp_path):
    with pytest.raises(BenchmarkSkipped, match="build_train.py"):
        load_sides(train_items=10, holdout=2, cache=str(tmp_path), f30k_root=None, coco_root=None)


def test_registered_with_the_data_size_points():
    (bench,) = [b for b in get_suite("accuracy") if b.name == "leaprr_f30k"]
    assert [r["train_items"] for r in bench.runs()][::3] == [1000, 4000, 16_000, 29_000]
    assert {r["seed"] for r in bench.runs()} == {0, 1, 2}
