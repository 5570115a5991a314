"""``minibam bench`` and its harness: processes alternate, statistics, warnings, scripts.

No test here asserts a time: timings belong to the benchmark, not to the test suite.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from minibam import bench
from minibam.bench import harness
from minibam.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fake_processes(monkeypatch: pytest.MonkeyPatch, values: dict[str, list[float]]) -> list[str]:
    """Replace the child processes: each side returns its next value; returns the call order."""
    calls: list[str] = []
    left = {k: list(v) for k, v in values.items()}

    def run_process(side, spec, threads, timeout=900, allocator="kept"):
        calls.append(side.label)
        if spec.get("dump"):
            np.savez(spec["dump"], y=np.ones(3))
        value = left[side.label].pop(0)
        return {"times": [value] * spec["repeat"], "cpu_times": [value] * spec["repeat"], "peak_mib": value}

    monkeypatch.setattr(harness, "run_process", run_process)
    return calls


def test_sides_alternate_and_the_ratio_pairs_neighbours(monkeypatch):
    sides = [bench.Side("a", "minibam"), bench.Side("b", "minibam")]
    # Round 2 is slow for both sides (a burst of load): pairing by round cancels it.
    calls = fake_processes(monkeypatch, {"a": [1.0, 2.0, 3.0], "b": [2.0, 4.0, 6.0]})
    m = bench.measure("bam", (2, 4, 3, 3), "float64", sides, processes=3, repeat=2, compare=False)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert m.ratios == [0.5, 0.5, 0.5] and m.ratio == 0.5 and m.trusted
    assert m.center("a") == 2.0 and m.spread("a") == pytest.approx(1.0)


def test_a_wide_spread_of_ratios_is_not_trusted(monkeypatch):
    sides = [bench.Side("a", "minibam"), bench.Side("b", "minibam")]
    fake_processes(monkeypatch, {"a": [1.0, 1.0, 1.0], "b": [1.0, 2.0, 1.0]})
    m = bench.measure("bam", (2, 4, 3, 3), "float64", sides, processes=3, repeat=1, compare=False)
    assert m.ratios == [1.0, 0.5, 1.0] and m.ratio_spread == pytest.approx(0.5) and not m.trusted


def test_the_cli_warns_about_untrusted_ratios(monkeypatch, capsys):
    fake_processes(monkeypatch, {"minibam": [1.0, 1.0], f"minibam@{ROOT.name}": [1.0, 3.0]})
    code, out, _ = run(capsys, "bench", "--shapes", "2,16,4,4", "--dtype", "float32", "--processes", "2",
                       "--against", str(ROOT), "--markdown")
    code_row = [line for line in out.splitlines() if line.startswith("| (2,16,4,4)")]
    assert code == 0 and len(code_row) == 1 and "(!)" in code_row[0]
    assert "warning:" in out and "too busy" in out


def test_quick_run_of_real_processes_against_torch_or_alone(capsys):
    code, out, _ = run(capsys, "bench", "--quick", "--repeat", "1", "--warmup", "1", "--threads", "1",
                       "--dtype", "float64")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("(")]
    assert len(rows) == 2  # two quick shapes, one dtype
    if "PyTorch skipped" not in out:
        for row in rows:
            # A busy machine flags an untrusted ratio with "(!)" and can round it to 0.00.
            ratio, ratio_range, diff = row.replace("(!)", "").split()[-3:]
            assert float(ratio) >= 0 and "-" in ratio_range
            assert float(diff) < 1e-12  # the two libraries computed the same thing


def test_against_another_tree_compares_the_results(capsys):
    code, out, _ = run(capsys, "bench", "--shapes", "2,16,5,7", "--dtype", "float32", "--repeat", "1",
                       "--warmup", "1", "--processes", "1", "--against", str(ROOT))
    assert code == 0 and f"minibam@{ROOT.name}" in out
    row = next(line for line in out.splitlines() if line.startswith("(2,16,5,7)"))
    assert float(row.split()[-1]) == 0.0  # the same code gives the same numbers


def test_bad_against_is_a_usage_error(capsys, tmp_path):
    code, _, err = run(capsys, "bench", "--quick", "--against", str(tmp_path))
    assert code == 2 and "no minibam package" in err


def test_benchmarks_scripts_are_thin_wrappers(monkeypatch, capsys):
    script = ROOT / "benchmarks" / "bench_bam.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--quick", "--repeat", "1", "--warmup", "1", "--no-torch",
                                      "--dtype", "float64"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    assert "(2,32,8,8)" in capsys.readouterr().out
    for name in ("bench_cbam", "bench_conv", "bench_memory", "bench_step"):
        assert "main([\"bench\", \"--suite\"" in (ROOT / "benchmarks" / f"{name}.py").read_text()
    # tables.py measures through the same harness (bench.measure, bench.cases), not a copy of it.
    tables = (ROOT / "benchmarks" / "tables.py").read_text()
    assert "bench.measure(" in tables and "bench.cases(" in tables and "subprocess.run([sys.executable, \"-m\"" not in tables
