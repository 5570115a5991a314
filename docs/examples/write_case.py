"""Write one pass of a PyTorch BAM as a reference case, for ``minibam compare`` (docs/reference-checks.md).

    python docs/examples/write_case.py released.npz            # ReleasedBAM(64) on a 12 x 16 map

The module here is ``ReleasedBAM`` from ``my_bams.py``: it has the authors' layer names,
so its ``state_dict()`` keys are the format's ``param.*`` names as they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from my_bams import ReleasedBAM  # noqa: E402


def write_case(out: str, shape: tuple[int, int, int, int] = (4, 64, 12, 16), seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = ReleasedBAM(shape[1]).double().train()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(*shape, dtype=torch.float64)  # random, never ones

    before = {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}
    y = model(x)
    y.backward(dy)

    arrays = {"x": x.detach().numpy(), "dy": dy.numpy(), "y": y.detach().numpy(), "dx": x.grad.numpy()}
    arrays |= {f"param.{k}": v for k, v in before.items()}
    arrays |= {f"grad.{k}": p.grad.numpy() for k, p in model.named_parameters()}
    arrays |= {f"after.{k}": b.detach().numpy() for k, b in model.named_buffers()}
    np.savez(out, **arrays)


if __name__ == "__main__":
    write_case(sys.argv[1] if len(sys.argv) > 1 else "released.npz")
