"""``grad_table``: parameter and gradient norms, for spotting vanishing gradients."""

from __future__ import annotations

from typing import Any

import numpy as np

from minibam.viz.modules import named_parameters


def grad_table(module: Any) -> str:
    """One row per parameter: name, shape, ``|value|``, ``|grad|``, ``|grad|/|value|``.

    Norms are Frobenius norms; ``-`` where there is no gradient yet or the ratio is
    undefined. The last row gives the norms over all parameters together. Use it as
    ``print(grad_table(model))`` after ``loss.backward()``.
    """
    header = ("name", "shape", "|value|", "|grad|", "|grad|/|value|")
    rows: list[tuple[str, ...]] = []
    value_sq, grad_sq, count, any_grad = 0.0, 0.0, 0, False
    for name, p in named_parameters(module):
        value = float(np.linalg.norm(p.data))
        g = None if p.grad is None else float(np.linalg.norm(p.grad))
        value_sq += value**2
        count += p.data.size
        if g is not None:
            grad_sq += g**2
            any_grad = True
        rows.append((name, str(tuple(p.shape)), f"{value:.3e}", *_grad_columns(g, value)))
    if not rows:
        return "no parameters"
    total_value, total_grad = value_sq**0.5, (grad_sq**0.5 if any_grad else None)
    total = (f"total ({count} values)", "", f"{total_value:.3e}",
             *_grad_columns(total_grad, total_value))
    widths = [max(len(r[i]) for r in (header, *rows, total)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *map(line, rows), rule, line(total)])


def _grad_columns(g: float | None, value: float) -> tuple[str, str]:
    if g is None:
        return "-", "-"
    return f"{g:.3e}", (f"{g / value:.3e}" if value > 0 else "-")


