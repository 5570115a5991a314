"""The performance pages show what the harness measured, and nothing typed by hand.

``python benchmarks/tables.py --write`` keeps its measurements in benchmarks/results.json
and renders every ``<!-- bench:NAME -->`` region of docs/performance.md and docs/cbam.md
from them (minibam/bench/report.py). These tests render the committed record again and
compare; check the renderers' arithmetic (ratios, flags, targets, GFLOP/s) on records
made up here; and check that the pages' prose outside the regions states no measured
number (the pattern of tests/test_prose_numbers.py).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from pathlib import Path

import pytest

from minibam import bench
from minibam.bench import report
from tests.test_prose_numbers import _measured

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "benchmarks" / "results.json"
PAGES = {"docs/performance.md": {"meta", "bam", "profile", "threads", "conv", "step", "memory"},
         "docs/cbam.md": {"cbam"}}
RESNET_SHAPES = {"(4,256,56,56)", "(8,512,28,28)", "(16,1024,14,14)"}


def _prose(text: str) -> str:
    """A page without its generated regions, code (blocks and inline: commands and the
    code's own constants, such as a tolerance or a threshold), tables and math."""
    text = report.MARKER.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    return re.sub(r"^\|.*\|$", "", text, flags=re.M)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_shows_the_committed_record(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    assert set(report.regions(text)) == PAGES[page]
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    assert report.fill(text, record) == text, (
        f"{page}: a generated table differs from benchmarks/results.json; "
        "run `python benchmarks/tables.py --pages` (or measure again with --write)")


@pytest.mark.parametrize("page", [*sorted(PAGES), "docs/fast-kernels.md"])
def test_page_prose_states_no_measured_number(page: str) -> None:
    found = _measured(_prose((ROOT / page).read_text(encoding="utf-8")))
    assert not found, f"{page} states measured numbers outside the generated tables: {found}"


def test_the_record_holds_every_part() -> None:
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    assert set(record["runs"]) == {"bam", "cbam", "conv", "gemm", "step", "memory"}
    assert set(record["runs"]["bam"]) == {"kept", "default", "plain"}
    assert len(record["profile"]) == 2 * len(bench.BAM_SHAPES)
    assert len(report.thread_gains(record)) == 2 * len(bench.BAM_SHAPES)
    assert record["meta"]["allocators"]["kept"] == bench.allocator_environment("kept", "bam")


def _profiles(record: dict) -> list[tuple[str, dict]]:
    return [("(" + ",".join(map(str, r["shape"])) + ")", r) for r in record["profile"]]


def test_what_the_page_says_the_record_shows() -> None:
    """docs/performance.md, "Where the time goes", states these of the record in words."""
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    for label, r in _profiles(record):
        mb, th = (r["sides"][lib] for lib in ("minibam", "torch"))
        # "On one thread, the work is close": float64 about as much or less, float32 at most a third more.
        assert mb["total_ms"] / th["total_ms"] <= (1.1 if r["dtype"] == "float64" else 4 / 3), (label, r["dtype"])
        if r["dtype"] == "float32" and label in RESNET_SHAPES:
            # "the part where minibam does the most more than PyTorch"
            gaps = {part: mb["parts_ms"][part] - th["parts_ms"][part] for part in mb["parts_ms"]}
            assert max(gaps, key=gaps.get) == "3x3 convs", (label, gaps)
    for label, m in report._rows(record, "conv", "kept"):
        if m.shape[5] != 3:
            continue
        mb, th = (2 * report.useful_products(m.shape) / m.center(s.label) for s in m.sides[:2])
        if m.dtype == "float32":  # "below half of PyTorch's GFLOP/s and below a quarter of the peak"
            peak = next(p for _, p in report._rows(record, "gemm", "kept") if p.dtype == "float32")
            assert mb < th / 2 and mb < 2 * peak.shape[0] ** 3 / peak.center(peak.sides[0].label) / 4, label
        else:  # "level with PyTorch's or faster"
            assert m.ratio <= 1.05, label
    for gain in report.thread_gains(record):  # "PyTorch gains more from its second thread"
        if gain["shape"] in RESNET_SHAPES:
            assert gain["gain"]["torch"] > gain["gain"]["minibam"], gain


def _row(workload: str, label: str, shape: tuple, dtype: str, a: list[float], b: list[float]) -> dict:
    return {"workload": workload, "label": label, "shape": list(shape), "dtype": dtype,
            "sides": ["minibam", "torch"], "values": {"minibam": a, "torch": b},
            "ratios": [x / y for x, y in zip(a, b, strict=True)], "max_rel_diff": 1e-7}


def _record(ratio: float) -> dict:
    """A made-up record whose BAM float32 rounds have median ratio ``ratio``."""
    bam = [_row("bam", "(2,8,4,4)", (2, 8, 4, 4), "float32", [ratio * 0.95, ratio, ratio * 1.05], [1.0, 1.0, 1.0])]
    return {"runs": {"bam": {"kept": bam}}}


def test_bam_table_ratio_range_and_target() -> None:
    table = report.render_runs(_record(1.0), "bam")
    assert "| 1.00 (0.95-1.05) | ≤ 1: met |" in table
    assert "missed" in report.render_runs(_record(1.01), "bam")
    assert "1000.0 ±10%" in table  # minibam's median in ms, spread (max - min) / median


def test_untrusted_ratio_is_flagged() -> None:
    record = _record(1.0)
    record["runs"]["bam"]["kept"][0] = _row("bam", "(2,8,4,4)", (2, 8, 4, 4), "float64", [0.5, 1.0, 1.5],
                                            [1.0, 1.0, 1.0])
    assert "1.00 (0.50-1.50) (!) | ≤ 0.9: missed" in report.render_runs(record, "bam")


def test_useful_products_count_the_pairs_without_padding() -> None:
    """Against a brute-force count over every output pixel and tap."""
    for n, c, h, w, o, k, d in [(1, 1, 5, 4, 1, 3, 1), (2, 3, 6, 7, 2, 3, 2), (1, 2, 3, 3, 1, 3, 4)]:
        p = d * (k - 1) // 2
        inside = sum(0 <= a + i * d - p < h and 0 <= b + j * d - p < w
                     for a, b, i, j in itertools.product(range(h), range(w), range(k), range(k)))
        assert report.useful_products((n, c, h, w, o, k, d)) == 3 * n * c * o * inside


def test_conv_table_reads_gflops_against_the_peak() -> None:
    shape = (1, 1, 5, 4, 1, 3, 1)
    record = {"runs": {
        "conv": {"kept": [_row("conv", "tiny", shape, "float32", [1e-6] * 3, [2e-6] * 3)]},
        "gemm": {"kept": [{**_row("gemm", "10^3", (10,), "float32", [1e-6] * 3, [1e-6] * 3),
                           "sides": ["numpy"], "values": {"numpy": [1e-6] * 3}, "ratios": []}]}}}
    table = report.render_conv(record)
    flops = 2 * report.useful_products(shape)
    assert f"| {flops / 1e-6 / 1e9:.0f} | {flops / 2e-6 / 1e9:.0f} | {2 * 10**3 / 1e-6 / 1e9:.0f} |" in table
    assert "0.50 (0.50-0.50) | " in table and "≤ 1.5: met" in table


def test_fill_rewrites_only_the_regions_and_refuses_unknown_ones() -> None:
    record = _record(0.8)
    text = "before\n<!-- bench:bam -->\nstale\n<!-- /bench -->\nafter 12 ms\n"
    filled = report.fill(text, record)
    assert filled.startswith("before\n<!-- bench:bam -->\n\n| shape") and filled.endswith("<!-- /bench -->\nafter 12 ms\n")
    assert report.fill(filled, record) == filled
    assert "stale" not in filled
    with pytest.raises(ValueError, match="unknown region 'nope'"):
        report.fill("<!-- bench:nope -->\n<!-- /bench -->", record)
    with pytest.raises(KeyError, match="no 'bam' run with 'kept'"):
        report.render_runs({"runs": {"bam": {}}}, "bam")


def test_a_changed_record_changes_the_page() -> None:
    """The comparison can fail: one changed measurement shows on the page."""
    record = _record(0.8)
    page = report.fill("<!-- bench:bam -->\n<!-- /bench -->\n", record)
    other = copy.deepcopy(record)
    other["runs"]["bam"]["kept"][0]["values"]["torch"][1] = 0.5
    assert report.fill(page, other) != page


def test_gemm_workload_runs_in_its_own_process() -> None:
    m = bench.measure("gemm", (32,), "float64", [bench.Side("numpy", "minibam")], processes=1, repeat=1,
                      warmup=1, threads=1, compare=False)
    assert len(m.values["numpy"]) == 1 and m.values["numpy"][0] > 0
