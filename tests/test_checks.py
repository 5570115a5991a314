"""minibam.checks: the one comparison (tolerances, the zero-by-construction rule), per-case
seeds, and the thorough self-check against PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minibam.checks import all_cases, case_seed, compare, default_tolerance, run_case
from minibam.cli import main


def test_default_tolerances_are_torch_testing_assert_close():
    assert default_tolerance(np.float64) == (1e-7, 1e-7)
    assert default_tolerance(np.float32) == (1.3e-6, 1e-5)
    assert default_tolerance(np.int64) == (0.0, 0.0)


def test_default_tolerances_agree_with_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        e = rng.standard_normal(200).astype(dtype)
        for factor in (0.5, 0.99, 1.01, 3.0):  # just inside and just outside the tolerance
            rtol, atol = default_tolerance(dtype)
            a = e + np.where(rng.random(200) < 0.5, 1, -1) * factor * (atol + rtol * np.abs(e))
            a = a.astype(dtype)
            try:
                torch.testing.assert_close(torch.from_numpy(a), torch.from_numpy(e))
                torch_ok = True
            except AssertionError:
                torch_ok = False
            assert compare("a", a, e).passed == torch_ok, (dtype, factor)


def test_row_reports_the_worst_element():
    e = np.zeros((2, 3))
    a = e.copy()
    a[1, 2] = 0.5
    a[0, 0] = 1e-9
    row = compare("w", a, e)
    assert not row.passed and row.mismatched == 1 and row.size == 6
    assert row.worst_index == (1, 2) and row.actual == 0.5 and row.expected == 0.0
    assert row.max_abs == 0.5 and row.shape == (2, 3)
    assert json.loads(json.dumps(row.to_dict()))["worst_index"] == [1, 2]


def test_nan_is_a_mismatch_and_serialises():
    row = compare("y", np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    assert not row.passed and row.mismatched == 1 and row.worst_index == (1,)
    json.dumps(row.to_dict(), allow_nan=False)


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="db has shape"):
        compare("db", np.zeros(3), np.zeros(4))


def test_zero_by_construction_is_judged_on_the_case_scale():
    """A bias right before a training-mode batch norm: round-off passes, a real error fails."""
    roundoff = np.array([3e-15, -1e-15, 2e-15])
    other = np.array([1e-15, 2e-15, -4e-15])
    assert not compare("db", roundoff, other, rtol=1e-10, atol=0.0).passed  # relative to ~0
    row = compare("db", roundoff, other, rtol=1e-10, atol=0.0, case_scale=20.0)
    assert row.passed and row.on_case_scale and row.scale == 20.0
    wrong = compare("db", np.array([1e-3, 0, 0]), other, rtol=1e-10, atol=0.0, case_scale=20.0)
    assert not wrong.passed and wrong.on_case_scale
    # a gradient that is merely small (not round-off) keeps its own scale
    small = compare("db", np.array([1e-4, 0, 0]), np.array([1.1e-4, 0, 0]), case_scale=20.0)
    assert not small.on_case_scale and not small.passed


@given(hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-1e3, 1e3)))
def test_an_array_equals_itself_and_not_a_shifted_copy(e):
    assert compare("e", e.copy(), e).passed
    shifted = e + 1e-3 * (1 + np.abs(e))
    assert not compare("e", shifted, e).passed


def test_case_names_are_unique_and_seeds_stable():
    names = [c.name for c in all_cases(thorough=True)]
    assert len(names) == len(set(names))
    assert case_seed(0, "relu [x 3x5]") == case_seed(0, "relu [x 3x5]") != case_seed(1, "relu [x 3x5]")


def test_a_case_is_the_same_alone_and_in_the_full_run():
    """Its numbers depend on (seed, its name) only: not on -k, on --thorough or on position."""
    default = {c.name: c for c in all_cases()}
    thorough = {c.name: c for c in all_cases(thorough=True)}
    name = next(n for n in default if n.startswith("batch_norm"))
    a = run_case(default[name], 3).to_dict()
    b = run_case(thorough[name], 3).to_dict()
    for d in (a, b):
        d.pop("seconds")
    assert a == b


def test_check_json_rows_are_identical_under_k(capsys):
    assert main(["check", "--json", "--no-torch", "-k", "relu", "-k", "sigmoid"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert main(["check", "--json", "--no-torch", "-k", "relu"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert both["passed"] is True and len(both["rows"]) == 2 and both["torch"] is None
    relu = [r for r in both["rows"] if r["op"] == "relu"][0]
    for row in (relu, alone["rows"][0]):
        row.pop("seconds")
    assert relu == alone["rows"][0]
    assert relu["fd"][0]["name"] == "dx" and relu["fd"][0]["passed"]


def test_thorough_self_check_passes_with_torch(capsys):
    """The whole --thorough set, PyTorch included: the bias before a training-mode batch
    norm (exactly-zero gradient) must not fail on round-off."""
    pytest.importorskip("torch")
    code = main(["check", "--thorough", "--json"])
    report = json.loads(capsys.readouterr().out)
    failed = [(r["name"], r["failure"], r["fd_worst"], r["torch_worst"]) for r in report["rows"] if not r["passed"]]
    assert code == 0 and report["passed"], failed
    assert report["torch"] and all(r["torch"] is not None for r in report["rows"])
    zero = [a for r in report["rows"] if r["op"].startswith("BAM") for a in r["torch"] if a["on_case_scale"]]
    assert any(a["name"].endswith("gate_s_conv_reduce0.bias") for a in zero)
