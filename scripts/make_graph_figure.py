"""Draw docs/images/bam_graph.svg and bam_graph_collapsed.svg, the pictures of BAM's
autograd graph on the architecture page.

    python scripts/make_graph_figure.py      # needs Graphviz's `dot` program
                                             # (apt-get install graphviz)
"""

from __future__ import annotations

import pathlib
import subprocess

import numpy as np

import minibam as mb
from minibam import nn, viz

OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "images"


def main() -> None:
    mb.manual_seed(0)
    bam = nn.BAM(16, reduction_ratio=4, variant="paper")
    x = mb.Tensor(np.random.default_rng(0).standard_normal((2, 16, 6, 5)), requires_grad=True)
    y = bam(x)
    y.backward(np.random.default_rng(1).standard_normal(y.shape))
    OUT.mkdir(parents=True, exist_ok=True)
    for name, collapse in (("bam_graph", None), ("bam_graph_collapsed", "module")):
        dot = viz.to_dot(y, modules=bam, collapse=collapse)
        svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True)
        (OUT / f"{name}.svg").write_text(svg.stdout)
        print(f"wrote {OUT / name}.svg")


if __name__ == "__main__":
    main()
