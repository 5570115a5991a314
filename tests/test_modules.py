"""minibam.modules: each attention module described once, and what reference/compare/check
do with any description (issue 20 #5, #6; issue 23 #2 and #6)."""

from __future__ import annotations

import inspect
import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minibam import modules
from minibam.checks import all_cases
from minibam.checks import reference as ref
from minibam.checks.replay import compare_reference
from minibam.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def small_config(name: str, training: bool = True):
    """The first configuration ``minibam check`` runs for ``name``, in the given mode."""
    shape, config = modules.get(name).check_configs(False)[0]
    return shape, modules.Config(config.module, config.channels, config.options, training)


def test_the_registry_knows_every_module_and_refuses_others():
    assert modules.names()[0] == "bam" and {"bam", "cbam"} <= set(modules.names())
    for name in modules.names():
        description = modules.get(name)
        _, config = small_config(name)
        assert description.name == name and config.module == name
        assert isinstance(config.build(), description.module_class)
        assert config.describe().startswith(description.title)
    with pytest.raises(KeyError, match="no attention module called 'nope'; known: bam, cbam"):
        modules.get("nope")


@pytest.mark.parametrize("name", ["bam", "cbam"])
def test_random_is_seeded_and_its_batch_norms_are_not_the_defaults(name):
    _, config = small_config(name)
    a, b = (modules.get(name).random(config, seed=4) for _ in range(2))
    c = modules.get(name).random(config, seed=5)
    for key, value in a.state_dict().items():
        assert np.array_equal(value, b.state_dict()[key]), key
    assert any(not np.array_equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    for bn in modules.batch_norms(a):
        assert not np.allclose(bn.weight.data, 1.0) and not np.allclose(bn.running_var.data, 1.0)


@pytest.mark.parametrize("name", ["bam", "cbam"])
@pytest.mark.parametrize("training", [True, False])
def test_the_twin_computes_what_the_module_computes(name, training):
    torch = pytest.importorskip("torch")
    shape, config = small_config(name, training)
    description = modules.get(name)
    module = description.random(config, seed=1).train(training)
    twin = description.twin(module)
    x = np.random.default_rng(0).standard_normal(shape)
    from minibam import Tensor

    y = module(Tensor(x)).data
    np.testing.assert_allclose(twin(torch.from_numpy(x)).detach().numpy(), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["bam", "cbam"])
@pytest.mark.parametrize("keep_meta", [True, False])
def test_a_case_gives_back_its_configuration(name, keep_meta):
    shape, config = small_config(name)
    arrays = ref.make_reference(config, shape[0], shape[2], shape[3], seed=2)
    assert str(arrays["meta.format"]) == modules.get(name).format
    if not keep_meta:
        arrays = {k: v for k, v in arrays.items() if not k.startswith("meta.")}
    found, notes = ref.infer_config(arrays)
    assert found.module == name and found.channels == config.channels and found.training
    hidden = [o.key for o in modules.get(name).options if o.compare]
    for key, value in config.options.items():
        if keep_meta or key not in hidden:
            assert found.options[key] == value, key
        else:  # what no shape shows is assumed, and said
            assert f"{key} not stored in the file, assumed" in " ".join(notes)
            found = found.with_options(**{key: value})
    assert all(r.passed for r in compare_reference(arrays, found))


@pytest.mark.parametrize("name", ["bam", "cbam"])
@pytest.mark.parametrize("training", [True, False])
def test_the_manual_pair_computes_what_the_module_computes(name, training):
    from minibam import Tensor

    shape, config = small_config(name, training)
    description = modules.get(name)
    module = description.random(config, seed=3).train(training)
    forward, backward = description.manual_pair(config)
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    y, cache = forward(x, module.state_dict())
    grads = backward(dy, cache)
    xt = Tensor(x, requires_grad=True)
    out = module(xt)
    out.backward(dy)
    np.testing.assert_allclose(y, out.data, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["x"], xt.grad, rtol=1e-9, atol=1e-12)
    for key, p in module.named_parameters():
        np.testing.assert_allclose(grads[key], p.grad, rtol=1e-8, atol=1e-11, err_msg=key)


def test_options_of_another_module_are_refused_by_name():
    with pytest.raises(ValueError, match="--pool-types and --no-spatial are CBAM's options: add --module cbam"):
        modules.config_from_flags("bam", 8, {"--pool-types": ("avg",), "--reduction": 2})
    with pytest.raises(ValueError, match="--variant, --dilation-conv-num and --dilation are BAM's options"):
        modules.config_from_flags("cbam", 8, {"--variant": "paper"})
    config = modules.config_from_flags("cbam", 8, {"--reduction": 2, "--variant": None})
    assert config.options == {"reduction_ratio": 2, "pool_types": ("avg", "max"), "no_spatial": False}


def test_every_module_has_check_rows():
    ops = {c.op for c in all_cases()}
    for description in modules.all_descriptions():
        for _, config in description.check_configs(False):
            assert description.label(config) in ops


@pytest.mark.parametrize("path", ["minibam/cli/compare.py", "minibam/cli/reference.py", "minibam/cli/check.py"])
def test_cli_has_no_branch_per_module(path):
    source = (ROOT / path).read_text()
    code = source.split('"""', 2)[2]  # below the docstring
    for name in modules.names():
        assert f'"{name}"' not in code and f"'{name}'" not in code, (path, name)
    assert "import BAM" not in code and "import CBAM" not in code and "bam_combine" not in code


# ------------------------------------------------------------------------ issue 23
def _case(tmp_path: Path, *extra: str) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "case.npz"
    assert main(["reference", "--channels", "8", "--shape", "3,4,5", "--reduction", "4", "--out", str(path),
                 *extra]) == 0
    with np.load(path) as f:
        return path, {k: f[k] for k in f.files}


@pytest.mark.parametrize("module", ["bam", "cbam"])
@pytest.mark.parametrize("text", ["False", "false", "0"])
def test_meta_training_as_text_is_read_as_what_it_says(tmp_path, capsys, module, text):
    path, arrays = _case(tmp_path, "--eval", "--module", module)
    arrays["meta.training"] = np.array(text)
    np.savez(path, **arrays)
    capsys.readouterr()
    code, out, _ = run(capsys, "compare", str(path), "--json")
    report = json.loads(out)
    assert code == 0 and report["passed"] and "eval" in report["config"]


def test_meta_training_that_is_not_a_bool_is_refused_clearly(tmp_path, capsys):
    path, arrays = _case(tmp_path)
    arrays["meta.training"] = np.array("maybe")
    np.savez(path, **arrays)
    capsys.readouterr()
    code, out, err = run(capsys, "compare", str(path))
    assert code == 2 and out == "" and "meta.training = array('maybe'" in err and "not a valid bool" in err


@pytest.mark.parametrize("dtype", [">f8", ">f4"])
def test_a_big_endian_case_is_converted_not_refused(tmp_path, capsys, dtype):
    extra = ("--dtype", "float32") if dtype == ">f4" else ()
    path, arrays = _case(tmp_path, *extra)
    swapped = {k: v.astype(np.dtype(v.dtype).newbyteorder(">")) if v.dtype.kind == "f" else v
               for k, v in arrays.items()}
    assert swapped["x"].dtype.str == dtype
    np.savez(path, **swapped)
    capsys.readouterr()
    code, out, _ = run(capsys, "compare", str(path))
    assert code == 0 and "PASS" in out


def _bomb(path: Path, with_text: bool) -> None:
    """A valid-looking case whose y is 64 MB of zeros deflated into about 64 kB."""
    zeros = np.zeros((8, 8, 512, 256))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, value in {"x": np.zeros((2, 8, 4, 4)), "dy": np.zeros((2, 8, 4, 4)), "y": zeros,
                           "dx": np.zeros((2, 8, 4, 4))}.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, value)
            zf.writestr(key + ".npy", buffer.getvalue())
        if with_text:
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.array("minibam-bam-reference"))
            zf.writestr("meta.format.npy", buffer.getvalue())


@pytest.mark.parametrize("with_text", [False, True])
def test_compare_refuses_a_deflate_bomb_before_inflating_it(tmp_path, capsys, with_text):
    path = tmp_path / "bomb.npz"
    _bomb(path, with_text)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        code, _, err = run(capsys, "compare", str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 2 and "y.npy" in err and "not a readable .npz archive" in err
    assert peak < 16 << 20  # the member's 64 MB were never allocated


def test_compare_reads_cases_through_the_checked_reader():
    source = inspect.getsource(ref.load_arrays) + inspect.getsource(ref._read_checked)
    assert "io.read_arrays(" in source and "np.load(" not in source


def test_a_corrupt_text_member_is_a_one_line_refusal(tmp_path, capsys):
    path, _ = _case(tmp_path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("meta.variant.npy")  # after meta.format: read past the numbers-only reader
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size - 3] ^= 0xFF  # a byte of "paper"
    path.write_bytes(bytes(data))
    capsys.readouterr()
    code, out, err = run(capsys, "compare", str(path))
    assert code == 2 and out == "" and err.count("\n") == 1 and "not a readable .npz archive" in err


def test_an_option_of_another_module_given_to_compare_is_said_to_be_unused(tmp_path, capsys):
    path, _ = _case(tmp_path)
    capsys.readouterr()
    code, out, _ = run(capsys, "compare", str(path), "--pool-types", "avg")
    assert code == 0 and "--pool-types is CBAM's option; this is a BAM case, so it was not used" in out
