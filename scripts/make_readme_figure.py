"""Draw docs/images/attention_maps.png, the picture on the README.

Trains the small BAM network on scikit-learn's digits for a few epochs (seconds on a
laptop) and shows, for a few test digits, the spatial attention map M_s of the first
BAM and the mean of its combined attention over channels, before and after training.

    python scripts/make_readme_figure.py        # needs the "notebooks" extra
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import minibam as mb  # noqa: E402
from minibam import functional as F  # noqa: E402
from minibam import nn  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "images" / "attention_maps.png"


def first_bam_maps(net: nn.BAMNet, x: np.ndarray) -> dict[str, np.ndarray]:
    net.eval()
    h = mb.Tensor(x)
    with mb.no_grad():
        for module in net.children():
            if isinstance(module, nn.BAM):
                return module.attention_maps(h)
            h = module(h)
    raise RuntimeError("the network has no BAM")


def main() -> None:
    digits = load_digits()
    x = (digits.images[:, None] / 16.0 - 0.3) / 0.45
    y = digits.target
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[300:], order[:300]
    mb.manual_seed(0)
    net = nn.BAMNet(in_channels=1, num_classes=10, widths=(16, 32), reduction_ratio=4, dilation_val=2)
    shown = test[:6]
    before = first_bam_maps(net, x[shown])
    optimizer = mb.optim.Adam(net.parameters(), lr=5e-3)
    rng = np.random.default_rng(1)
    for _ in range(6):
        net.train()
        perm = rng.permutation(train)
        for i in range(0, len(perm) - 63, 64):
            batch = perm[i:i + 64]
            loss = F.cross_entropy(net(mb.Tensor(x[batch])), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = first_bam_maps(net, x[shown])
    net.eval()
    with mb.no_grad():
        accuracy = (net(mb.Tensor(x[test])).data.argmax(1) == y[test]).mean()

    rows = [("digit", digits.images[shown], "gray_r"),
            ("M_s before training", before["spatial"], "magma"),
            ("M_s after training", after["spatial"], "magma"),
            ("attention after\n(mean over channels)", after["attention"].mean(axis=1), "viridis")]
    fig, axes = plt.subplots(len(rows), len(shown), figsize=(1.6 * len(shown), 1.7 * len(rows)))
    for r, (title, images, cmap) in enumerate(rows):
        for c, image in enumerate(images):
            axes[r, c].imshow(image, cmap=cmap)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(title, fontsize=8)
    fig.suptitle(f"BAM (paper variant) in a small CNN on sklearn digits; test accuracy {accuracy:.0%}",
                 fontsize=9)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT} (test accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
