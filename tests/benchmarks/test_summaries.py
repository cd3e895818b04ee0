from benchmarks.summaries import baselines_accuracy, bench_inputs

KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "RSUM")


def _row(method, setting, rsum, proto="coco5k_test"):
    return {
        "method": method,
        "setting": setting,
        "protocol": proto,
        "params": {"beta": 20.0},
        **dict.fromkeys(KEYS[:-1], 10.0),
        "RSUM": rsum,
        "delta_RSUM": rsum - 200,
        "time_s": 1.0,
        "peak_rss_delta_mib": 5.0,
    }


def test_baselines_accuracy_headline_picks_the_best_tuned_rows():
    fig = {
        "base": {"coco5k_test": {**dict.fromkeys(KEYS[:-1], 9.0), "RSUM": 200.0}},
        "fair": [
            _row("nnn", "defaults", 230),
            _row("nnn", "tuned", 240),
            _row("dn", "tuned", 220),
            _row("dn", "tuned per direction", 245),
        ],
        "transductive": [_row("dsl", "tuned", 250)],
        "tuning": {"nnn": {"best_params": {"k": 32}, "dev_rsum": 300.0, "trials": [1, 2], "time_s": 3.0}},
    }
    tables = baselines_accuracy([{"figures": fig}], None)["tables"]
    head = tables[0]
    assert head["headline"] and [r[1] for r in head["rows"]] == [
        "base",
        "best training-free: dn (tuned per direction)",
        "best transductive: dsl (tuned)",
    ]
    assert [r[-1] for r in head["rows"]] == [0.0, 45, 50]
    detail = tables[1]
    assert detail["title"] == "Training-free methods, COCO 5K" and len(detail["rows"]) == 6
    assert tables[-1]["title"] == "Tuning on coco1k_dev" and tables[-1]["rows"][0][1] == "k=32"


def test_bench_inputs_table():
    fig = {
        "mode": "scores",
        "n_images": 10,
        "n_texts": 50,
        "dim": 8,
        "intra_source": "second_order",
        "seconds": {
            "intra_prepare": 1.0,
            "neighbors": 1.0,
            "image_lists": 1.0,
            "text_lists": 1.0,
            "graph_only": 0.5,
            "total": 4.0,
        },
        "input_mb": 1.0,
        "output_mb": 2.0,
        "n_pillars": 64,
        "list_len_i2t": 32,
        "list_len_t2i": 8,
        "graph_neighbors": 10,
    }
    table = bench_inputs([{"figures": fig, "peak_rss_mb": 100.0}], None)["tables"][0]
    row = dict(zip(table["columns"], table["rows"][0]))
    assert row["queries/s"] == 15.0 and row["peak RSS MB"] == 100.0


def _leaprr_fig(protocol, seed, rsum, normalize=None):
    res = {
        "base": {**dict.fromkeys(KEYS[:-1], 9.0), "RSUM": 200.0},
        "leaprr": {**dict.fromkeys(KEYS[:-1], 10.0), "RSUM": rsum},
        "rsum_gain": rsum - 200.0,
        "fit_seconds": 10.0,
        "rerank_seconds": 1.0,
    }
    return {
        "figures": {
            "protocol": protocol,
            "seed": seed,
            "normalize": normalize,
            "normalize_params": {"k": 32} if normalize else {},
            "config": {"embed_dim": 128, "epochs": 6},
            "protocols": {protocol: res},
        }
    }


def test_leaprr_accuracy_reports_mean_and_spread_over_seeds():
    from benchmarks.summaries import leaprr_accuracy

    runs = [_leaprr_fig("a", s, 210.0 + 2 * s) for s in range(3)] + [_leaprr_fig("a", 0, 230.0, "nnn")]
    tables = leaprr_accuracy(runs, None)["tables"]
    head = tables[0]
    assert head["headline"] and [r[1] for r in head["rows"]] == ["LeaPRR", "LeaPRR after nnn"]
    rsum = head["rows"][0][3]
    assert rsum["mean"] == 212.0 and rsum["std"] == 2.0 and rsum["n"] == 3
    assert head["rows"][1][3] == 230.0  # one seed: a plain value, no spread
    detail = dict(zip(tables[1]["columns"], tables[1]["rows"][0]))
    assert detail["method"] == "base" and detail["RSUM"] == 200.0
    assert "embed_dim=128" in tables[1]["notes"]


def test_leaprr_rerank_speed_table():
    from benchmarks.summaries import leaprr_rerank_speed

    fig = {
        "shape": [10, 50],
        "embedding_dim": 8,
        "seconds": {"neighbors": 1.0, "model": 2.0},
        "total_seconds": 3.0,
        "queries_per_second": 20.0,
        "output_matrix_mb": 0.1,
        "config": {"embed_dim": 768, "depth": 2, "num_heads": 24},
    }
    tables = leaprr_rerank_speed([{"figures": fig, "peak_rss_mb": 50.0}], None)["tables"]
    assert tables[0]["headline"] and "the paper's size" in tables[0]["notes"]
    assert tables[1]["columns"][1:5] == ["precision", "queries/s", "neighbors s", "model s"]
    assert tables[1]["rows"][0][1] == "fp32"  # runs before the precision was recorded: fp32


def test_leaprr_training_speed_table():
    from benchmarks.summaries import leaprr_training_speed

    fig = {
        "config_name": "paper",
        "config": {"embed_dim": 768, "depth": 2, "num_heads": 24, "batch_size": 512},
        "shape": [300, 1500],
        "steps": 3,
        "items_per_second": 10.0,
        "reference_items_per_second": 20.0,
        "ratio_loop_to_reference": 2.0,
        "seconds": {"inputs (not in the loop)": 1.5},
    }
    table = leaprr_training_speed([{"figures": fig, "peak_rss_mb": 900.0}], None)["tables"][0]
    row = dict(zip(table["columns"], table["rows"][0]))
    assert row["config"].startswith("paper (D=768") and row["loop / bare matmuls"] == 2.0
    assert row["items/s"] == 10.0 and "bare matmuls" in table["notes"]


def test_multi_process_fit_table():
    from benchmarks.summaries import multi_process_fit

    fig = {
        "protocol": "a",
        "train": [800, 3200],
        "config": {"embed_dim": 64, "depth": 2, "num_heads": 4, "batch_size": 128, "epochs": 8},
        "threads_total": 2,
        "one_process": {"seconds": 100.0, "best_dev_rsum": 500.0},
        "2_processes": {"seconds": 80.0, "best_dev_rsum": 500.1},
        "speedup": 1.25,
        "max_weight_difference": 2e-7,
    }
    table = multi_process_fit([{"figures": fig}], None)["tables"][0]
    rows = [dict(zip(table["columns"], r)) for r in table["rows"]]
    assert [r["run"] for r in rows] == ["1 process x 2 thread(s)", "2 processes x 1 thread(s)"]
    assert rows[1]["best dev RSUM"] == 500.1 and rows[1]["speed-up"] == 1.25
    assert "8 epochs" in table["notes"]


def test_leaprr_accuracy_notes_each_protocols_configuration():
    from benchmarks.summaries import leaprr_accuracy

    b = _leaprr_fig("b", 0, 220.0)
    b["figures"]["config"] = {"embed_dim": 128, "epochs": 3}
    tables = leaprr_accuracy([_leaprr_fig("a", 0, 210.0), b], None)["tables"]
    assert "protocol a: embed_dim=128, epochs=6; protocol b: embed_dim=128, epochs=3" in tables[0]["notes"]
    assert "epochs=3" in tables[2]["notes"] and "epochs=6" not in tables[2]["notes"]


def test_leaprr_accuracy_adds_extended_metrics_when_measured():
    from benchmarks.summaries import leaprr_accuracy

    runs = [_leaprr_fig("a", s, 210.0) for s in range(2)]
    for s, r in enumerate(runs):
        r["figures"]["protocols"]["a"]["extended"] = {
            "base": {"i2t_mAP@R": 9.0, "t2i_NDCG@10": 30.0},
            "leaprr": {"i2t_mAP@R": 12.0 + 2 * s, "t2i_NDCG@10": 31.0},
        }
    detail = leaprr_accuracy(runs, None)["tables"][1]
    rows = [dict(zip(detail["columns"], r)) for r in detail["rows"]]
    assert rows[0]["i2t mAP@R"] == 9.0 and rows[0]["t2i NDCG@10"] == 30.0
    assert rows[1]["i2t mAP@R"]["mean"] == 13.0 and rows[1]["t2i NDCG@10"]["mean"] == 31.0
