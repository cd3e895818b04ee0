import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.publish import END_MARKER, START_MARKER, publish, render_results_readme, update_readme
from benchmarks.runner import REPO_ROOT, resummarize, run_benchmark, run_suite
from benchmarks.suites import SUITES, Benchmark
from pillar_rerank.exceptions import InvalidInputError
from pillar_rerank.io import load_json
from pillar_rerank.report.results import load_results, validate_result


def run(bench, tmp_path, **kw):
    return run_benchmark(bench, results_dir=tmp_path / "results", data_root=tmp_path / "data", **kw)


def test_result_is_wrapped_with_metadata_and_written(targets, tmp_path):
    bench = Benchmark("speed", "alloc", "Alloc", f"{targets}:allocate", params={"mb": 1}, seeds=(0, 1))
    res = run(bench, tmp_path, command="python -m benchmarks run --suite speed")
    saved = load_json(tmp_path / "results" / "speed" / "alloc.json")
    assert validate_result(saved) and saved["status"] == "ok" and saved["reason"] is None
    assert [r["params"] for r in saved["runs"]] == [{"mb": 1, "seed": 0}, {"mb": 1, "seed": 1}]
    assert saved["runs"][1]["figures"]["seed"] == 1 and saved["seed"] == 0
    assert saved["machine"]["cpu_count"] >= 1 and saved["machine"]["ram_gb"] > 0
    assert saved["versions"]["numpy"] == np.__version__ and "torch" in saved["versions"]
    assert "commit" in saved["git"] and saved["command"].endswith("--suite speed")
    assert dt.datetime.fromisoformat(saved["date"]).tzinfo is not None
    # default summary: one row per run with the varying parameter and flattened figures
    table = saved["tables"][0]
    assert table["columns"][:2] == ["seed", "mb"] and "nested.x" in table["columns"]
    assert res["runs"][0]["peak_rss_mb"] > 0


def test_peak_rss_is_measured_per_isolated_run(targets, tmp_path):
    bench = Benchmark("scale", "rss", "RSS", f"{targets}:allocate", points=({"mb": 300}, {"mb": 5}))
    runs = run(bench, tmp_path)["runs"]
    big, small = (r["peak_rss_mb"] - r["start_rss_mb"] for r in runs)
    assert big > 250 and small < 100  # the second process does not inherit the first one's peak


def test_missing_module_or_data_is_a_recorded_skip(targets, tmp_path):
    no_mod = run(Benchmark("accuracy", "m", "M", "nope_mod:run", requires=("nope_mod",)), tmp_path)
    assert no_mod["status"] == "skipped" and "'nope_mod' is not available" in no_mod["reason"]
    no_data = run(Benchmark("accuracy", "d", "D", f"{targets}:allocate", data_files=("x.npy",)), tmp_path)
    assert no_data["status"] == "skipped" and "shared data not found" in no_data["reason"]
    raised = run(Benchmark("accuracy", "s", "S", f"{targets}:skip"), tmp_path)
    assert raised["status"] == "skipped" and raised["reason"] == "needs a GPU"
    for name in ("m", "d", "s"):
        validate_result(load_json(tmp_path / "results" / "accuracy" / f"{name}.json"))


def test_data_root_is_passed_when_data_is_declared(targets, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.npy").write_bytes(b"")
    bench = Benchmark(
        "accuracy",
        "d",
        "D",
        f"{targets}:allocate",
        params={"mb": 1},
        data_files=("x.npy",),
        data_param="seed",
    )  # any keyword the target accepts
    res = run(bench, tmp_path)
    assert res["runs"][0]["figures"]["seed"] == str(tmp_path / "data")


def test_skip_never_replaces_an_earlier_ok_result(targets, tmp_path):
    run(Benchmark("speed", "x", "X", f"{targets}:allocate", params={"mb": 1}), tmp_path)
    run(Benchmark("speed", "x", "X", "nope_mod:run", requires=("nope_mod",)), tmp_path)
    assert load_json(tmp_path / "results" / "speed" / "x.json")["status"] == "ok"


def test_failures_are_recorded_and_the_suite_goes_on(targets, tmp_path):
    benches = [
        Benchmark("speed", "boom", "Boom", f"{targets}:boom"),
        Benchmark("speed", "list", "List", f"{targets}:not_a_dict"),
        Benchmark("speed", "good", "Good", f"{targets}:allocate", params={"mb": 1}),
    ]
    boom, listed, good = run_suite(benches, results_dir=tmp_path / "r", data_root=tmp_path)
    assert boom["status"] == "failed" and "RuntimeError: exploded on purpose" in boom["reason"]
    assert any("Traceback" in n for n in boom["notes"])
    assert listed["status"] == "failed" and "returned list, not a dict" in listed["reason"]
    assert good["status"] == "ok"


def test_a_skipped_point_is_noted_and_the_others_kept(targets, tmp_path):
    bench = Benchmark("speed", "mixed", "Mixed", f"{targets}:allocate", points=({"mb": 1}, {"mb": "x"}))
    res = run(bench, tmp_path)
    assert res["status"] == "failed" and len(res["runs"]) == 1 and res["tables"]
    assert any('"mb": "x"' in n for n in res["notes"])


def test_the_result_file_is_rewritten_after_each_run(targets, tmp_path):
    """A suite stopped after some runs keeps them on disk, with a note saying it was stopped."""
    path = tmp_path / "results" / "speed" / "steps.json"
    bench = Benchmark("speed", "steps", "Steps", f"{targets}:read_own_result", params={"path": str(path)},
                      points=({"mb": 1}, {"mb": 2}, {"mb": 3}))
    res = run(bench, tmp_path)
    seen = [r["figures"]["runs_on_disk"] for r in res["runs"]]
    assert seen == [0, 1, 2]
    assert any("1 of 3 runs finished" in n for n in res["runs"][1]["figures"]["notes"])
    final = load_json(path)
    assert final["status"] == "ok" and len(final["runs"]) == 3
    assert not any("Written while running" in n for n in final["notes"])


def test_a_run_past_its_limit_is_killed(targets, tmp_path):
    res = run(Benchmark("speed", "slow", "Slow", f"{targets}:sleep", timeout_s=2), tmp_path)
    assert res["status"] == "failed" and res["reason"] == "timed out after 2 s."


def test_a_killed_runner_takes_its_worker_with_it(targets, tmp_path):
    """SIGTERM to the runner (a plain ``kill``) kills the worker too: no orphan left running."""
    pid_file = tmp_path / "worker.pid"
    code = ("from benchmarks.runner import run_isolated; "
            f"run_isolated('{targets}:sleep_noting_pid', {{'path': {str(pid_file)!r}}}, timeout_s=120)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.environ["PYTHONPATH"], str(REPO_ROOT)])}
    runner = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert runner.poll() is None and time.monotonic() < deadline, "the worker never started"
            time.sleep(0.05)
        worker = int(pid_file.read_text())
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while _alive(worker):
            assert time.monotonic() < deadline, f"worker {worker} still running after its runner was killed"
            time.sleep(0.05)
    finally:
        if runner.poll() is None:
            runner.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")   # a zombie waiting for init to reap it is not running
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_resummarize_rederives_tables_from_the_runs(targets, tmp_path):
    bench = Benchmark("speed", "alloc", "Alloc", f"{targets}:allocate", params={"mb": 1})
    run(bench, tmp_path)
    path = tmp_path / "results" / "speed" / "alloc.json"
    original = load_json(path)
    tampered = {**original, "tables": [{"title": "typed by hand", "columns": ["x"], "rows": [[1]]}]}
    path.write_text(json.dumps(tampered))
    assert resummarize(tmp_path / "results", [bench]) == [path]
    assert load_json(path)["tables"] == original["tables"]


def test_scratch_results_are_never_published(targets, tmp_path):
    bench = Benchmark("speed", "alloc", "Alloc", f"{targets}:allocate", params={"mb": 1})
    run_benchmark(bench, results_dir=tmp_path / "results" / "tmp", data_root=tmp_path)
    written = publish(tmp_path / "results")
    assert "No results yet." in written["results_readme"].read_text() and "report" not in written
    assert resummarize(tmp_path / "results", [bench]) == []


def test_registry_is_well_formed():
    for suite, benches in SUITES.items():
        assert len({b.name for b in benches}) == len(benches)
        for b in benches:
            assert b.suite == suite and ":" in b.target and b.runs()
            assert b.runs(quick=True)


def test_smoke_suite_end_to_end(tmp_path):
    """The CI check: run the tiny synthetic suite, then validate JSON, tables and the report."""
    results_dir = tmp_path / "results"
    results = run_suite(SUITES["smoke"], results_dir=results_dir, data_root=tmp_path, command="smoke")
    assert [r["status"] for r in results] == ["ok"] * len(SUITES["smoke"]), [r["reason"] for r in results]
    written = publish(results_dir)
    loaded = load_results(results_dir)
    assert {r["name"] for r in loaded} == {b.name for b in SUITES["smoke"]}
    for res in loaded:
        assert res["runs"] and all(r["peak_rss_mb"] > 0 and r["wall_s"] > 0 for r in res["runs"])
    accuracy = next(r for r in loaded if r["name"] == "synthetic_accuracy")
    methods = [m["name"] for m in accuracy["diagnostics"]["methods"]]
    assert "diagnostics" not in accuracy["runs"][0]["figures"]  # stored once, at the top level
    assert methods[0] == "base" and len(methods) >= 2
    scale = next(r for r in loaded if r["name"] == "synthetic_scale")
    assert len(scale["runs"]) == 1 and len(scale["plots"]) == 2  # the benchmark spawns one process per size
    sizes = scale["runs"][0]["figures"]["runs"]
    assert [(r["n_images"], r["n_texts"]) for r in sizes] == [(200, 1000), (400, 2000)]
    assert all(r["within_budget"] for r in sizes)

    readme = written["results_readme"].read_text()
    assert readme == render_results_readme(loaded)  # regenerated from the JSONs alone
    assert "#### Recall@K, synthetic" in readme
    assert "#### Input building under a memory budget (build_cache, max_memory)" in readme
    (results_dir / "README.md").unlink()
    publish(results_dir, html_report=False)
    assert (results_dir / "README.md").read_text() == readme

    html = written["report"].read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # self-contained: no external assets
    pngs = [json.dumps(x) for x in html.split("data:image/png;base64,")[1:]]
    assert len(pngs) == 5  # recall, rank change, hubness, scale time, scale RSS
    assert html.count('src="data:image/png;base64,iVBORw0KGgo') == 5  # every image is a PNG


def test_update_readme_rewrites_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Title\n\nintro\n\n## Results\n\n{START_MARKER}\nold figures\n{END_MARKER}\n\n## After\n"
    )
    update_readme(readme, [])
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n## Results\n\n") and text.endswith(
        f"{END_MARKER}\n\n## After\n"
    )
    assert "old figures" not in text and "python -m benchmarks tables --readme README.md" in text
    update_readme(readme, [])
    assert readme.read_text() == text  # idempotent


@pytest.mark.parametrize(
    "content",
    ["# no markers\n", f"{END_MARKER}\n{START_MARKER}\n", f"{START_MARKER}\n{START_MARKER}\n{END_MARKER}\n"],
)
def test_update_readme_refuses_without_proper_markers(tmp_path, content):
    readme = tmp_path / "README.md"
    readme.write_text(content)
    with pytest.raises(InvalidInputError, match="results:start"):
        update_readme(readme, [])
    assert readme.read_text() == content


def test_foreign_result_files_are_flagged_and_refused(targets, tmp_path):
    from click.testing import CliRunner

    from benchmarks.__main__ import main as cli
    from benchmarks.runner import check_results_folder, foreign_results

    bench = Benchmark("speed", "alloc", "Alloc", f"{targets}:allocate", params={"mb": 1})
    results = tmp_path / "results"
    run(bench, tmp_path)
    assert foreign_results(results, [bench]) == []
    (results / "old_script.json").write_text('{"figures": [1, 2]}')  # an older script's output
    (results / "speed" / "copy.json").write_text((results / "speed" / "alloc.json").read_text())
    (results / "tmp").mkdir()
    (results / "tmp" / "trial.json").write_text("{}")  # scratch: never looked at
    found = foreign_results(results, [bench])
    assert len(found) == 2
    assert "old_script.json (not a runner result" in found[0]
    assert "speed/copy.json (a result of speed/alloc belongs in speed/alloc.json)" in found[1]
    assert "is not registered" in foreign_results(results, [])[-1]
    with pytest.raises(InvalidInputError, match="does not own.*old_script.json"):
        check_results_folder(results, [bench])
    out = CliRunner().invoke(cli, ["tables", "--results-dir", str(results), "--no-report"])
    assert out.exit_code == 2 and "old_script.json" in out.output


def test_a_foreign_file_at_a_result_path_is_never_overwritten(targets, tmp_path):
    bench = Benchmark("speed", "alloc", "Alloc", f"{targets}:allocate", params={"mb": 1})
    target = tmp_path / "results" / "speed" / "alloc.json"
    target.parent.mkdir(parents=True)
    target.write_text('{"hand": "made"}')
    with pytest.raises(InvalidInputError, match="not a benchmark-runner result"):
        run(bench, tmp_path)
    assert json.loads(target.read_text()) == {"hand": "made"}


def test_the_published_results_folder_holds_only_runner_results():
    from pathlib import Path

    from benchmarks.runner import DEFAULT_RESULTS, foreign_results
    from benchmarks.suites import get_suite

    assert foreign_results(Path(DEFAULT_RESULTS), [*get_suite("smoke"), *get_suite("all")]) == []


def test_benchmark_modules_have_no_entry_point_of_their_own():
    from pathlib import Path

    import benchmarks

    root = Path(benchmarks.__file__).parent
    own = [p.name for p in root.glob("*.py")
           if p.name not in ("__main__.py", "worker.py") and '__name__ == "__main__"' in p.read_text()]
    assert own == [], f"run these through `python -m benchmarks run --suite ... --only ...`: {own}"


def test_resume_keeps_matching_runs_with_their_provenance_and_runs_the_rest(targets, tmp_path):
    path = tmp_path / "results" / "speed" / "grow.json"
    one_seed = Benchmark("speed", "grow", "Grow", f"{targets}:allocate", params={"mb": 1}, seeds=(0,))
    first = run(one_seed, tmp_path)
    old = load_json(path)
    old["git"] = {"commit": "0" * 40, "dirty": True}  # as if measured on another commit
    path.write_text(json.dumps(old))
    grown = Benchmark("speed", "grow", "Grow", f"{targets}:allocate", params={"mb": 1}, seeds=(0, 1))
    res = run(grown, tmp_path, resume=True)
    kept, new = res["runs"]
    assert kept["wall_s"] == first["runs"][0]["wall_s"] and kept["git"]["commit"] == "0" * 40
    assert kept["date"] == old["date"] and new["params"]["seed"] == 1 and "git" not in new
    assert any("kept from the earlier result" in n and "0" * 40 in n for n in res["notes"])
    validate_result(load_json(path))
    again = run(grown, tmp_path, resume=True)  # a kept run keeps its own commit, not the file's
    assert again["runs"][0]["git"]["commit"] == "0" * 40 and again["runs"][1]["wall_s"] == new["wall_s"]
    assert again["runs"][1]["git"] == res["git"]
    rerun = run(grown, tmp_path)  # without resume everything runs again
    assert not any("kept" in n for n in rerun["notes"])
    moved = load_json(path)
    moved["config"]["target"] = "somewhere.else:run"
    path.write_text(json.dumps(moved))
    other = run(grown, tmp_path, resume=True)  # another target's runs are never kept
    assert not any("kept" in n for n in other["notes"])
