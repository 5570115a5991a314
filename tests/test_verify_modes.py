"""verify sets up the modes it needs and leaves the caller's as they were (issue 23, items 7
and 8), and the small defects of issue 21: shapes= from the first pass on, CLI terms, each
layer named once, no noise line for a module that raises, no "(momentum?)"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_bam import TorchBAM  # noqa: E402
from torch_cbam import TorchCBAM  # noqa: E402

import minibam as mb  # noqa: E402
from minibam import nn, verify  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
C, R = 16, 4
SHAPES = [(2, C, 6, 6)]


@pytest.mark.parametrize("mode", ["no_grad", "set_grad_enabled", "inference_mode"])
def test_verify_inside_torch_grad_modes(mode):
    context = {"no_grad": torch.no_grad, "set_grad_enabled": lambda: torch.set_grad_enabled(False),
               "inference_mode": torch.inference_mode}[mode]
    module = TorchBAM(C, R, 2, 4, "official")
    with context():
        report = verify.bam(module, shapes=SHAPES)
        assert not torch.is_grad_enabled()  # restored inside the caller's block
        assert torch.is_inference_mode_enabled() == (mode == "inference_mode")
    assert report.passed, report
    with context():
        assert verify.cbam(TorchCBAM(C, R), shapes=SHAPES).passed
    assert torch.is_grad_enabled()


def test_verify_inside_minibam_no_grad():
    with mb.no_grad():
        report = verify.bam(TorchBAM(C, R, 2, 4, "paper"), shapes=SHAPES)
        assert not mb.is_grad_enabled()
        assert verify.cbam(TorchCBAM(C, R), shapes=SHAPES).passed
    assert report.passed, report
    assert mb.is_grad_enabled()


def test_verify_leaves_minibams_random_generator_alone():
    mb.manual_seed(0)
    expected = nn.BAM(8, 4).state_dict()
    mb.manual_seed(0)
    verify.bam(TorchBAM(C, R), shapes=SHAPES)
    verify.cbam(TorchCBAM(C, R), shapes=SHAPES)
    got = nn.BAM(8, 4).state_dict()
    assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_shapes_are_honoured_from_the_first_pass():
    class OnlySeven(TorchBAM):  # a port that runs on 7 x 7 maps only
        def forward(self, x):
            if x.shape[-2:] != (7, 7):
                raise RuntimeError(f"expected 7x7, got {tuple(x.shape)}")
            return super().forward(x)

    report = verify.bam(OnlySeven(C, R, 2, 4, "paper"), shapes=[(4, C, 7, 7)])
    assert report.passed and report.raised == "", report
    # and a module that raises on every shape asked for is reported on the first of them
    report = verify.bam(OnlySeven(C, R, 2, 4, "paper"), shapes=[(3, C, 5, 5), (2, C, 6, 6)])
    assert not report.passed and report.raised.startswith(f"eval (3,{C},5,5): RuntimeError")


def test_a_module_that_raises_gets_no_noise_line():
    class Crashes(TorchCBAM):
        def forward(self, x):
            raise RuntimeError("boom")

    text = str(verify.cbam(Crashes(C, R), shapes=SHAPES))
    assert "the module raised on a legal input" in text and "RuntimeError: boom" in text
    assert "nan vs" not in text and "max rel inf" not in text and "worst" not in text


def test_a_layer_that_cannot_be_placed_is_named_once_in_the_users_terms():
    class Odd(TorchBAM):
        def __init__(self):
            super().__init__(C, R, 2, 4, "official")
            self.extra = torch.nn.Conv2d(C, C, 5, padding=2, stride=1)

        def forward(self, x):
            y = super().forward(x)
            return self.extra(y) + self.extra(y)  # a shared layer, called twice

    with pytest.raises(ValueError, match="cannot read the module as a BAM") as error:
        verify.bam(Odd(), shapes=SHAPES)
    assert str(error.value).count("extra (Conv2d 16->16, kernel (5, 5))") == 1, error.value
    assert "key_map" not in str(error.value)


def test_the_cli_speaks_cli_terms(tmp_path, capsys):
    from minibam.cli import main

    source = tmp_path / "nolayers.py"
    source.write_text("import torch\nclass Empty(torch.nn.Module):\n"
                      "    def forward(self, x):\n        return x\n")
    code = main(["verify", f"{source}:Empty"])
    err = capsys.readouterr().err
    assert code == 2 and "--shape N,C,H,W" in err and "shapes=" not in err, err
