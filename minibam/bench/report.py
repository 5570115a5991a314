"""A benchmark record — what ``benchmarks/tables.py`` measured, kept as JSON — and the
Markdown tables of the docs, rendered from it.

Every measured table of docs/performance.md and docs/cbam.md sits between two markers::

    <!-- bench:NAME -->
    ... written by `write_pages`, never by hand ...
    <!-- /bench -->

``python benchmarks/tables.py --write`` measures, saves the record
(``benchmarks/results.json``) and rewrites those regions; tests/test_bench_record.py
renders the committed record again and checks that every page shows exactly that, so a
table cannot drift from what was measured and no measured number is typed by hand.

The targets are issue 25's: BAM forward + backward at most 1.0 × PyTorch in float32 and
0.9 × in float64, a BAMNet training step at most 1.2 × in float32, BAM's dilated 3 × 3
convolution alone at most 1.5 × in float32 — with the same allocator settings on both
sides. A table says, per row, whether the median ratio meets its target.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from minibam.bench.harness import Measurement, Side

TARGETS = {("bam", "float32"): 1.0, ("bam", "float64"): 0.9, ("step", "float32"): 1.2,
           ("conv3x3", "float32"): 1.5}
MARKER = re.compile(r"(<!-- bench:([a-z0-9-]+) -->\n)(.*?)(<!-- /bench -->)", re.S)


def to_dict(label: str, m: Measurement) -> dict[str, Any]:
    """One measured row as plain JSON data."""
    return {"workload": m.workload, "label": label, "shape": list(m.shape), "dtype": m.dtype,
            "sides": [s.label for s in m.sides], "values": m.values, "ratios": m.ratios,
            "max_rel_diff": m.max_rel_diff}


def from_dict(row: dict[str, Any]) -> Measurement:
    sides = tuple(Side(label, "") for label in row["sides"])
    return Measurement(row["workload"], tuple(row["shape"]), row["dtype"], sides,
                       {k: list(v) for k, v in row["values"].items()}, list(row["ratios"]),
                       row.get("max_rel_diff"))


def _rows(record: dict, suite: str, setting: str) -> list[tuple[str, Measurement]]:
    try:
        rows = record["runs"][suite][setting]
    except KeyError:
        raise KeyError(f"bench report: the record has no {suite!r} run with {setting!r}") from None
    return [(row["label"], from_dict(row)) for row in rows]


def _ms(m: Measurement, side: int) -> str:
    label = m.sides[side].label
    return f"{1e3 * m.center(label):.1f} ±{100 * m.spread(label):.0f}%"


def _ratio(m: Measurement | None) -> str:
    if m is None or m.ratio is None:
        return "-"
    flag = "" if m.trusted else " (!)"
    return f"{m.ratio:.2f} ({m.min_ratio:.2f}-{m.max_ratio:.2f}){flag}"


def _target(kind: str, dtype: str, m: Measurement) -> list[str]:
    target = TARGETS.get((kind, dtype))
    if target is None or m.ratio is None:
        return ["-"]
    return [f"≤ {target:g}: " + ("met" if m.ratio <= target else "missed")]


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _by_key(rows: list[tuple[str, Measurement]]) -> dict[tuple[str, str], Measurement]:
    return {(label, m.dtype): m for label, m in rows}


def render_runs(record: dict, suite: str) -> str:
    """A module's forward + backward (``bam``, ``cbam``) or a training step (``step``): the
    times with the allocator kept on both sides, and the ratio as imported (glibc's
    defaults on both sides) and on the plain path where they were measured; the target
    column where the suite has one."""
    runs = record["runs"][suite]
    others = {s: _by_key(_rows(record, suite, s)) for s in ("default", "plain") if s in runs}
    targets = any(kind == suite for kind, _ in TARGETS)
    header = ["shape (N,1,H,W)" if suite == "step" else "shape (N,C,H,W)", "dtype", "minibam ms", "torch ms",
              "ratio (range)"]
    header += [{"default": "as imported: ratio", "plain": "plain path: ratio"}[s] for s in others]
    header += ["target (median ratio)"] if targets else []
    rows = []
    for label, m in _rows(record, suite, "kept"):
        row = [label, m.dtype, _ms(m, 0), _ms(m, 1), _ratio(m)]
        row += [_ratio(others[s].get((label, m.dtype))) for s in others]
        rows.append(row + (_target(suite, m.dtype, m) if targets else []))
    return _table(header, rows)


def useful_products(shape: tuple[int, ...]) -> int:
    """Multiply-adds of forward + dx + dW of the conv workload at ``shape`` = (N, C, H, W,
    O, k, dilation), padding = dilation (k - 1) / 2, counting only pairs without a padding
    zero (dx and dW multiply the same pairs as the forward, summed another way)."""
    from minibam.backends.conv_regions import products
    from minibam.ops.conv import geometry

    n, c, h, w, o, k, d = shape
    g = geometry("bench", h, w, k, 1, d * (k - 1) // 2, d)
    return 3 * products((n, c, h, w), o, g)[1]


def _gflops(products: int, seconds: float) -> str:
    return f"{2 * products / seconds / 1e9:.0f}"


def render_conv(record: dict) -> str:
    """Each convolution: times, ratio, and GFLOP/s of both sides on the useful products,
    beside the peak (NumPy's large matrix product, same threads)."""
    peak = {m.dtype: m for _, m in _rows(record, "gemm", "kept")}
    header = ["case", "dtype", "minibam ms", "torch ms", "ratio (range)", "minibam GFLOP/s", "torch GFLOP/s",
              "peak GFLOP/s", "target (median ratio)"]
    rows = []
    for label, m in _rows(record, "conv", "kept"):
        products = useful_products(m.shape)
        p = peak.get(m.dtype)
        peak_cell = _gflops(p.shape[0] ** 3, p.center(p.sides[0].label)) if p else "-"
        kind = "conv" if m.shape[5] == 1 else "conv3x3"
        rows.append([label, m.dtype, _ms(m, 0), _ms(m, 1), _ratio(m),
                     *(_gflops(products, m.center(s.label)) for s in m.sides[:2]), peak_cell,
                     *_target(kind, m.dtype, m)])
    return _table(header, rows)


def render_memory(record: dict) -> str:
    header = ["shape (N,C,H,W)", "dtype", "minibam MiB", "torch MiB", "ratio"]
    rows = []
    for label, m in _rows(record, "memory", "memory"):
        a, b = (m.center(s.label) for s in m.sides[:2])
        rows.append([label, m.dtype, f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}" if b else "-"])
    return _table(header, rows)


def render_profile(record: dict) -> str:
    """CPU time of each part of a BAM step, one thread, minibam beside PyTorch."""
    header = ["shape (N,C,H,W)", "dtype", "part", "minibam ms", "torch ms", "minibam - torch ms",
              "minibam GFLOP/s", "torch GFLOP/s"]
    rows = []
    for result in record["profile"]:
        label = "(" + ",".join(map(str, result["shape"])) + ")"
        mb, th = result["sides"]["minibam"], result["sides"]["torch"]
        for part, a in mb["parts_ms"].items():
            b = th["parts_ms"][part]
            flops = [f"{result['gflops'][lib][part]:.0f}" if part in result["gflops"][lib] else "-"
                     for lib in ("minibam", "torch")]
            rows.append([label, result["dtype"], part, f"{a:.1f}", f"{b:.1f}", f"{a - b:+.1f}", *flops])
        rows.append([label, result["dtype"], "**whole step**", f"{mb['total_ms']:.1f}", f"{th['total_ms']:.1f}",
                     f"{mb['total_ms'] - th['total_ms']:+.1f}", f"peak {mb['peak_gflops']:.0f}",
                     f"peak {th['peak_gflops']:.0f}"])
    return _table(header, rows)


def thread_gains(record: dict) -> list[dict]:
    """For each BAM shape and dtype, each library's one-thread CPU time of a step (the
    profile) over its two-thread wall time (the BAM table, allocator kept): how much the
    second core gives it."""
    walls = _by_key(_rows(record, "bam", "kept"))
    gains = []
    for result in record["profile"]:
        label = "(" + ",".join(map(str, result["shape"])) + ")"
        m = walls.get((label, result["dtype"]))
        if m is None:
            continue
        one = {lib: result["sides"][lib]["total_ms"] for lib in ("minibam", "torch")}
        two = {lib: 1e3 * m.center(side.label) for lib, side in zip(("minibam", "torch"), m.sides, strict=False)}
        gains.append({"shape": label, "dtype": result["dtype"], "one": one, "two": two,
                      "gain": {lib: one[lib] / two[lib] for lib in one}})
    return gains


def render_threads(record: dict) -> str:
    header = ["shape (N,C,H,W)", "dtype", "minibam: 1 thread CPU ms", "2 threads wall ms", "gain",
              "torch: 1 thread CPU ms", "2 threads wall ms", "gain"]
    return _table(header, ([g["shape"], g["dtype"], *(cell for lib in ("minibam", "torch") for cell in (
        f"{g['one'][lib]:.1f}", f"{g['two'][lib]:.1f}", f"{g['gain'][lib]:.2f}"))] for g in thread_gains(record)))


def render_meta(record: dict) -> str:
    """How and where the record was measured: the header every generated page shows."""
    meta, when = record["meta"], record["when"]
    kept = " ".join(f"{k}={v}" for k, v in meta["allocators"]["kept"].items())
    loads = "; ".join(f"{part} on {w['date']}, load average {w['load_start']:.1f} to {w['load_end']:.1f}"
                      for part, w in when.items())
    return "\n".join([
        f"- **Measured** with `{meta['command']}` on {meta['machine']}; "
        f"NumPy {meta['numpy']} ({meta['blas']}), PyTorch {meta['torch']}.",
        f"- **Threads**: {meta['threads']} a side. **Processes**: {meta['processes']} a side, alternating; "
        f"each times {meta['repeat']} calls after {meta['warmup']} warm-up calls and reports their median.",
        f"- **Allocator, the same on both sides**: \"kept\" columns give *both* processes `{kept}` "
        "(the settings of minibam's opt-in `keep_freed_memory()`); \"as imported\" gives both glibc's "
        "defaults, minibam with only what it does on its own (its reused temporaries).",
        f"- **When**, each part: {loads} (on {meta['cores']} cores: above {meta['cores']}, other work "
        "waited for a core). `(!)` marks a ratio whose rounds spread by more than 20 % of their median.",
    ])


RENDERERS: dict[str, Callable[[dict], str]] = {
    "meta": render_meta, "bam": lambda r: render_runs(r, "bam"), "cbam": lambda r: render_runs(r, "cbam"),
    "conv": render_conv, "step": lambda r: render_runs(r, "step"), "memory": render_memory, "profile": render_profile, "threads": render_threads,
}


def regions(text: str) -> list[str]:
    """The names of the generated regions of a page, in order."""
    return [m.group(2) for m in MARKER.finditer(text)]


def fill(text: str, record: dict) -> str:
    """``text`` with every generated region rendered afresh from ``record``."""
    def one(m: re.Match) -> str:
        name = m.group(2)
        if name not in RENDERERS:
            raise ValueError(f"bench report: unknown region {name!r} (known: {', '.join(RENDERERS)})")
        return m.group(1) + "\n" + RENDERERS[name](record) + "\n\n" + m.group(4)

    return MARKER.sub(one, text)
