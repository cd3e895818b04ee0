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
            "fusion": {o: {"i2t": 0.3, "t2i": "overwrite"} for o in ("mean", "per_direction")},
            "tests": {t: {**{f"{o}/{r}": _rec(290 + shift + 10 * (r == "fused") + (o == "mean"))
                             for o in ("mean", "per_direction") for r in ("fused", "overwrite", "input")},
                          "per_direction/chosen": _rec(305 + shift)}
                      for t in tests}}
        for v, n in (("alone", None), ("best", "nnn"), ("dsl", "dsl"))
    }
    return {
        "seed": seed, "train_items": 4000, "leaprr": leaprr,
        "evaluation": {t: {"base": _rec(300.0), "methods": {
            "nnn": {**_rec(305 + shift), "transductive": False},
            "dsl": {**_rec(320 + shift), "transductive": True}}} for t in tests},
    }


def test_summary_lists_every_method_and_every_combination():
    runs = [{"figures": _figures(0, 0.0)}, {"figures": _figures(1, 2.0)}]
    tables = summarize(runs, None)["tables"]
    headline, detail = tables[0], tables[1]
    assert headline["headline"] and not detail["headline"]
    modes = ["one matrix, overwrite: the paper's", "one matrix, dev-chosen rules",
             "per direction, overwrite", "per direction, dev-chosen rules",
             "per direction, dev-chosen rules and output (rerank_both)"]
    methods = [r[0] for r in detail["rows"]]
    learned = [f"{who} ({m})" for who in ("LeaPRR", "nnn -> LeaPRR", "dsl -> LeaPRR") for m in modes]
    assert methods == ["base", "nnn (tuned per direction)", "dsl (tuned per direction)", *learned]
    assert "embed_dim=64" in detail["notes"] and "seeds [0, 1]" in detail["notes"]
    assert "fit seconds per variant: alone: 10 ± 0 s" in detail["notes"]
    assert "dsl: mean i2t 0.3 t2i overwrite, per_direction i2t 0.3 t2i overwrite" in detail["notes"]
    assert len(tables) == 3  # headline + one per test set
    # the headline: one row per method, both test sets side by side, mean over the two seeds
    assert [r[0] for r in headline["rows"]] == methods
    cols = headline["columns"]
    row = dict(zip(cols, headline["rows"][methods.index("LeaPRR (one matrix, dev-chosen rules)")]))
    assert row["F30K held-out 1,000 RSUM"]["mean"] == pytest.approx(302.0)
    assert row["COCO 5K (other domain) ΔRSUM"]["mean"] == pytest.approx(2.0)


def test_missing_training_cache_skips_with_the_build_command(tmp_path):
    with pytest.raises(BenchmarkSkipped, match="build_train.py"):
        load_sides(train_items=10, holdout=2, cache=str(tmp_path), f30k_root=None, coco_root=None)


def test_registered_with_the_largest_size_and_a_seed_spread():
    (big,) = [b for b in get_suite("accuracy") if b.name == "leaprr_f30k"]
    # every variant at the largest size over three seeds, one variant per run; then the data sizes
    assert [(r["train_items"], r["seed"], r["variants"]) for r in big.runs()] == [
        *((28_000, seed, [variant]) for variant in ("alone", "dsl", "best") for seed in (0, 1, 2)),
        (1000, 0, ["alone"]), (16_000, 0, ["alone"])]
    (seeds,) = [b for b in get_suite("accuracy") if b.name == "leaprr_f30k_seeds"]
    assert [(r["train_items"], r["seed"]) for r in seeds.runs()] == [(4000, 0), (4000, 1), (4000, 2)]
    # both measure the cpu preset's text lists (the curves keep the paper's 8 as their origin)
    from pillar_rerank.config import PRESETS

    for run in (*big.runs(), *seeds.runs()):
        assert run["config"]["list_len_t2i"] == PRESETS["cpu"]["list_len_t2i"] == 16


def test_a_bounded_bank_is_named_in_the_notes():
    figs = {**_figures(0, 0.0), "train_items": 28_000, "bank": [8000, 32_000]}
    detail = summarize([{"figures": figs}], None)["tables"][1]
    assert "banks from its first 8,000 items" in detail["notes"]
    whole = {**_figures(0, 0.0), "bank": [4000, 16_000]}
    assert "banks from it." in summarize([{"figures": whole}], None)["tables"][1]["notes"]


def test_curves_give_one_row_per_point_with_its_width_and_lists():
    from benchmarks.leaprr_f30k import summarize_curves

    runs = []
    for size, ll_t2i in ((1000, 8), (4000, 32)):
        figs = {**_figures(0, 0.0), "train_items": size, "best_normaliser": "nnn"}
        for entry in figs["leaprr"].values():
            entry["config"] = {"embed_dim": 64, "num_heads": 4, "list_len_i2t": 32, "list_len_t2i": ll_t2i}
        runs.append({"figures": figs})
    (table,) = summarize_curves(runs, None)["tables"]
    rows = [dict(zip(table["columns"], r)) for r in table["rows"]]
    assert [(r["train items"], r["list_len i2t/t2i"]) for r in rows] == [(1000, "32/8"), (4000, "32/32")]
    first = rows[0]
    assert first["F30K held-out 1,000: base"] == 300.0 and first["COCO 5K: nnn"] == 305.0
    assert first["F30K held-out 1,000: LeaPRR, one matrix, overwrite"] == 291.0
    assert first["COCO 5K: LeaPRR, per direction, dev-chosen"] == 305.0  # rerank_both's output
    assert "DSL -> LeaPRR, per direction, dev-chosen" in " ".join(table["columns"])


def test_curves_registered_one_point_per_lever():
    (curves,) = [b for b in get_suite("accuracy") if b.name == "leaprr_f30k_curves"]
    points = [(r["train_items"], r.get("config", {}), r["seed"], r["variants"]) for r in curves.runs()]
    both = ["alone", "dsl"]
    assert points == [(4000, {}, 0, both), (4000, {"list_len_t2i": 16}, 0, both), (4000, {}, 1, ["dsl"]),
                      (4000, {}, 2, ["dsl"]), (4000, {"list_len_t2i": 32}, 0, both),
                      (4000, {"embed_dim": 128}, 0, ["alone"])]


def test_figures_written_before_the_output_choice_still_summarise():
    figs = _figures(0, 0.0)
    for entry in figs["leaprr"].values():
        for tests in entry["tests"].values():
            del tests["per_direction/chosen"]
    detail = summarize([{"figures": figs}], None)["tables"][1]
    assert not any("rerank_both" in r[0] for r in detail["rows"])


def test_one_point_per_variant_summarises_as_one_seed():
    """leaprr_f30k trains each variant in its own run: same size and seed, merged."""
    whole = _figures(0, 0.0)
    parts = []
    for variant in ("dsl", "best"):
        figs = _figures(0, 0.0)
        figs["leaprr"] = {variant: whole["leaprr"][variant]}
        parts.append({"figures": figs})
    detail = summarize(parts, None)["tables"][1]
    methods = [r[0] for r in detail["rows"]]
    assert "seeds [0]" in detail["notes"]
    assert methods[:3] == ["base", "nnn (tuned per direction)", "dsl (tuned per direction)"]
    assert any(m.startswith("nnn -> LeaPRR") for m in methods)
    assert any(m.startswith("dsl -> LeaPRR") for m in methods)
    assert not any(m.startswith("LeaPRR") for m in methods)


def test_a_variant_trained_for_fewer_seeds_is_summarised_over_its_own():
    """Chains: DSL -> LeaPRR for seeds 0-2, NNN -> LeaPRR for seed 0 only."""
    runs = []
    for seed, variants in ((0, ("dsl", "best")), (1, ("dsl",)), (2, ("dsl",))):
        figs = _figures(seed, float(seed))
        figs["leaprr"] = {v: figs["leaprr"][v] for v in variants}
        for test in figs["evaluation"].values():  # a base that differs per seed
            test["base"]["RSUM"] = 300.0 + seed
        runs.append({"figures": figs})
    detail = summarize(runs, None)["tables"][1]
    rows = {r[0]: dict(zip(detail["columns"], r)) for r in detail["rows"]}
    dsl = rows["dsl -> LeaPRR (per direction, overwrite)"]
    nnn = rows["nnn -> LeaPRR (per direction, overwrite)"]
    assert dsl["seeds"] == 3 and nnn["seeds"] == 1
    assert dsl["RSUM"]["mean"] == pytest.approx(291.0)  # 290 + seed shift 0, 1, 2
    assert dsl["ΔRSUM"]["mean"] == pytest.approx(-10.0) and nnn["ΔRSUM"] == pytest.approx(-10.0)  # one seed
    assert "seeds [0, 1, 2]" in detail["notes"] and "dsl: 10 ± 0 s, best: 10 s" in detail["notes"]
