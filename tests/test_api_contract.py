"""The names, arguments and defaults of /work/shared/API.md (the public contract), read
back with ``inspect.signature`` so that a rename or a changed default fails here.

Each entry lists the documented parameters in order; a name may take extra options after
them (the contract allows it) only if those have defaults, so a documented call still works.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest

import minibam as mb
from minibam import exercises, functional, manual, nn, verify
from minibam import functional as F

REQUIRED = inspect.Parameter.empty
VAR = "*"  # a *args parameter

CONTRACT = {
    "Tensor": (mb.Tensor, [("data", REQUIRED), ("requires_grad", False)]),
    "Tensor.backward": (mb.Tensor.backward, [("self", REQUIRED), ("grad", None)]),
    "Tensor.sum": (mb.Tensor.sum, [("self", REQUIRED), ("axis", None), ("keepdims", False)]),
    "Tensor.mean": (mb.Tensor.mean, [("self", REQUIRED), ("axis", None), ("keepdims", False)]),
    "Tensor.reshape": (mb.Tensor.reshape, [("self", REQUIRED), ("shape", VAR)]),
    "Tensor.transpose": (mb.Tensor.transpose, [("self", REQUIRED), ("axes", VAR)]),
    "Tensor.expand": (mb.Tensor.expand, [("self", REQUIRED), ("shape", VAR)]),
    "gradcheck": (mb.gradcheck, [("fn", REQUIRED), ("inputs", REQUIRED), ("eps", 1e-6),
                                 ("atol", 1e-5), ("rtol", 1e-3)]),
    "F.conv2d": (F.conv2d, [("x", REQUIRED), ("weight", REQUIRED), ("bias", None), ("stride", 1),
                            ("padding", 0), ("dilation", 1)]),
    "F.im2col": (F.im2col, [("x", REQUIRED), ("kernel_size", REQUIRED), ("stride", 1),
                            ("padding", 0), ("dilation", 1)]),
    "F.col2im": (F.col2im, [("cols", REQUIRED), ("input_shape", REQUIRED), ("kernel_size", REQUIRED),
                            ("stride", 1), ("padding", 0), ("dilation", 1)]),
    "F.linear": (F.linear, [("x", REQUIRED), ("weight", REQUIRED), ("bias", None)]),
    "F.batch_norm": (F.batch_norm, [("x", REQUIRED), ("running_mean", REQUIRED),
                                    ("running_var", REQUIRED), ("weight", None), ("bias", None),
                                    ("training", False), ("momentum", 0.1), ("eps", 1e-5)]),
    "F.sigmoid": (F.sigmoid, [("x", REQUIRED)]),
    "F.relu": (F.relu, [("x", REQUIRED)]),
    "F.global_avg_pool2d": (F.global_avg_pool2d, [("x", REQUIRED)]),
    "Module.train": (nn.Module.train, [("self", REQUIRED), ("mode", True)]),
    "Module.add_module": (nn.Module.add_module, [("self", REQUIRED), ("name", REQUIRED),
                                                 ("module", REQUIRED)]),
    "Module.load_state_dict": (nn.Module.load_state_dict, [("self", REQUIRED), ("state", REQUIRED),
                                                           ("strict", True)]),
    "Module.to": (nn.Module.to, [("self", REQUIRED), ("dtype", REQUIRED)]),
    "Parameter": (nn.Parameter, [("data", REQUIRED)]),
    "Sequential": (nn.Sequential, [("modules", VAR)]),
    "Linear": (nn.Linear, [("in_features", REQUIRED), ("out_features", REQUIRED), ("bias", True)]),
    "Conv2d": (nn.Conv2d, [("in_channels", REQUIRED), ("out_channels", REQUIRED),
                           ("kernel_size", REQUIRED), ("stride", 1), ("padding", 0),
                           ("dilation", 1), ("bias", True)]),
    "BatchNorm1d": (nn.BatchNorm1d, [("num_features", REQUIRED), ("eps", 1e-5), ("momentum", 0.1)]),
    "BatchNorm2d": (nn.BatchNorm2d, [("num_features", REQUIRED), ("eps", 1e-5), ("momentum", 0.1)]),
    "ReLU": (nn.ReLU, []),
    "Sigmoid": (nn.Sigmoid, []),
    "Flatten": (nn.Flatten, []),
    "BAM": (nn.BAM, [("gate_channel", REQUIRED), ("reduction_ratio", 16), ("dilation_conv_num", 2),
                     ("dilation_val", 4), ("variant", "paper")]),
    "BAM.attention_maps": (nn.BAM.attention_maps, [("self", REQUIRED), ("x", REQUIRED)]),
    "CBAM": (nn.CBAM, [("gate_channels", REQUIRED), ("reduction_ratio", 16),
                       ("pool_types", ("avg", "max")), ("no_spatial", False)]),
    "manual.bam_forward": (manual.bam_forward, [("x", REQUIRED), ("params", REQUIRED),
                                                ("variant", "paper"), ("training", True),
                                                ("dilation_val", 4), ("eps", 1e-5)]),
    "manual.bam_backward": (manual.bam_backward, [("dy", REQUIRED), ("cache", REQUIRED)]),
    "manual.cbam_forward": (manual.cbam_forward, [("x", REQUIRED), ("params", REQUIRED)]),
    "manual.cbam_backward": (manual.cbam_backward, [("dy", REQUIRED), ("cache", REQUIRED)]),
    "manual_seed": (mb.manual_seed, [("seed", REQUIRED)]),
    "save": (mb.save, [("state_dict", REQUIRED), ("path", REQUIRED)]),
    "load": (mb.load, [("path", REQUIRED)]),
    "is_grad_enabled": (mb.is_grad_enabled, []),
    "verify.bam": (verify.bam, [("module", REQUIRED), ("variant", "auto"), ("shapes", None),
                                ("training", (True, False)), ("dtype", "float64"),
                                ("dilation_val", 4), ("key_map", None), ("seed", 0)]),
    "verify.cbam": (verify.cbam, [("module", REQUIRED), ("variant", "auto"), ("shapes", None),
                                  ("training", (True, False)), ("dtype", "float64")]),
    "exercises.check": (exercises.check, [("name_or_fn", REQUIRED), ("fn", None)]),
}


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_signature_as_documented(name):
    obj, documented = CONTRACT[name]
    params = list(inspect.signature(obj).parameters.values())
    got = [(p.name, VAR if p.kind is p.VAR_POSITIONAL else p.default) for p in params]
    assert got[: len(documented)] == documented, f"{name}{inspect.signature(obj)}"
    for extra in params[len(documented):]:  # extra options must not break a documented call
        assert extra.kind in (extra.VAR_KEYWORD, extra.VAR_POSITIONAL) or extra.default is not REQUIRED, (
            f"{name}: undocumented required parameter {extra.name!r}")


def test_namespaces_and_attributes():
    assert mb.nn is nn and mb.functional is functional
    assert issubclass(mb.GradcheckError, Exception)
    t = mb.Tensor(np.ones((2, 3)), requires_grad=True)
    for attribute in ("data", "grad", "requires_grad", "shape", "dtype", "ndim"):
        assert hasattr(t, attribute), attribute
    for method in ("numpy", "detach", "item", "exp", "log", "sigmoid", "relu", "sum", "mean",
                   "reshape", "transpose", "expand", "backward"):
        assert callable(getattr(t, method)), method
    for method in ("forward", "__call__", "parameters", "named_parameters", "buffers", "named_modules",
                   "children", "train", "eval", "zero_grad", "add_module", "state_dict",
                   "load_state_dict", "to", "float", "double"):
        assert callable(getattr(nn.Module, method)), method
    assert {"ChannelGate", "SpatialGate", "BAM", "CBAM"} <= set(dir(nn))
    with mb.no_grad():
        assert mb.is_grad_enabled() is False
    assert mb.is_grad_enabled() is True
    assert {"paper", "official", "official-released"} <= set(verify.VARIANTS)
    assert all(isinstance(text, str) and text for text in verify.VARIANTS.values())


def test_check_finds_the_exercise_by_name_or_by_function():
    def unbroadcast(grad, shape):
        raise NotImplementedError

    assert exercises.check(unbroadcast, quiet=True) is False
    assert exercises.check("unbroadcast", unbroadcast, quiet=True) is False


def test_importing_minibam_imports_no_torch():
    code = "import sys, minibam, minibam.nn, minibam.verify, minibam.exercises; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_verify_report_fields():
    pytest.importorskip("torch")
    from torch_bam import TorchBAM

    report = verify.bam(TorchBAM(8, 2, 2, 4, "paper"), shapes=[(3, 8, 4, 5)], training=(True,))
    assert report.passed is True and report.variant == report.closest == "paper"
    assert report.first_divergence is None and report.rows
    for row in report.rows:
        for field in ("name", "max_abs", "max_rel", "mismatched", "size", "worst_index", "passed"):
            assert hasattr(row, field), field
    data = json.loads(json.dumps(report.to_dict()))
    assert {"passed", "variant", "closest", "first_divergence", "rows"} <= set(data)
    assert "PASS" in str(report) and "paper" in str(report)
