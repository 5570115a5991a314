r"""Optimizers: ``SGD`` and ``Adam`` with exactly ``torch.optim``'s update rules.

An optimizer holds a list of parameter Tensors and, per parameter, whatever state its
rule needs (a momentum buffer, Adam's moment estimates). ``step()`` reads each
parameter's ``.grad`` and updates its ``.data`` **in place**; parameters whose ``.grad``
is ``None`` are skipped, as in PyTorch. ``Tensor(...)`` copied the user's data when the
parameter was made, so no caller array is changed.

    opt = mb.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.zero_grad(); loss.backward(); opt.step()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from numbers import Real
from typing import Any

import numpy as np

from minibam.tensor import Tensor

__all__ = ["Adam", "Optimizer", "SGD"]


def _number(value: Any, name: str, owner: str, minimum: float | None = 0.0) -> float:
    """``value`` as a float, at least ``minimum`` if given (PyTorch's ``Invalid ...`` checks)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    value = float(value)
    if minimum is not None and not value >= minimum:
        raise ValueError(f"{owner}: invalid {name} {value!r}, must be >= {minimum}")
    return value


class Optimizer:
    """Base class: the parameter list, ``zero_grad`` and the per-parameter ``state``.

    Subclasses set ``defaults`` (their hyper-parameters, for ``repr``) and implement
    ``_update(param, grad, state)`` for one parameter.
    """

    defaults: dict[str, Any]

    def __init__(self, params: Iterable[Tensor]) -> None:
        name = type(self).__name__
        if isinstance(params, Tensor):
            raise TypeError(
                f"{name}: params must be an iterable of Tensors (for example "
                f"model.parameters()), got a single Tensor; wrap it in a list"
            )
        try:
            params = list(params)
        except TypeError:
            raise TypeError(
                f"{name}: params must be an iterable of Tensors, got {type(params).__name__}"
            ) from None
        if not params:
            raise ValueError(f"{name}: got an empty parameter list")
        seen: set[int] = set()
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{name}: params[{i}] must be a minibam Tensor, got {type(p).__name__} "
                    f"(parameter groups are not supported)"
                )
            if not p.is_leaf:
                raise ValueError(
                    f"{name}: params[{i}] is not a leaf Tensor (it was made by {p.grad_fn}); "
                    f"only leaves can be optimized"
                )
            if id(p) in seen:
                raise ValueError(f"{name}: params[{i}] appears more than once in the list")
            seen.add(id(p))
        self.params: list[Tensor] = params
        self.state: list[dict[str, Any]] = [{} for _ in params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: ``None`` (PyTorch's default) or zeros of the right shape."""
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            elif isinstance(p.grad, np.ndarray) and p.grad.flags.writeable:
                p.grad[...] = 0  # in place, as PyTorch's grad.zero_()
            else:  # a 0-d gradient is a NumPy scalar; a read-only one cannot be zeroed
                p.grad = np.zeros(p.shape, dtype=p.dtype)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient.

        ``closure``, if given, re-evaluates the model and returns the loss (as in
        PyTorch); it runs first and its result is returned.
        """
        loss = None
        if closure is not None:
            loss = closure()
        # Every gradient is checked before any parameter moves: nothing half-done.
        grads = [None if p.grad is None else self._checked_grad(i, p) for i, p in enumerate(self.params)]
        # inf and nan gradients give inf and nan parameters silently, as in PyTorch and
        # every op (docs/guarantees.md, "Warnings: none for inf and nan").
        with np.errstate(all="ignore"):
            for p, grad, state in zip(self.params, grads, self.state, strict=True):
                if grad is not None:
                    self._update(p, grad, state)
        return loss

    def _checked_grad(self, i: int, p: Tensor) -> np.ndarray:
        """``p.grad`` (set by backward, or by hand) as an array of real numbers of p's shape."""
        where = f"{type(self).__name__}.step: params[{i}].grad"
        if not isinstance(p.grad, (np.ndarray, np.generic)):
            raise TypeError(f"{where} must be an array, got {type(p.grad).__name__}")
        grad = np.asarray(p.grad)
        if grad.dtype.kind not in "biuf":
            raise TypeError(f"{where} must hold real numbers, got dtype {grad.dtype}")
        if grad.shape != p.shape:
            raise ValueError(f"{where} has shape {grad.shape}, expected the parameter's {p.shape}")
        return grad

    def _update(self, p: Tensor, grad: np.ndarray, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({len(self.params)} parameters, {hyper})"


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum, as ``torch.optim.SGD``.

    With $g = \nabla_p L + \lambda p$ (weight decay $\lambda$) and momentum $\mu$:
    $b \leftarrow g$ on the first step, then $b \leftarrow \mu b + (1 - \tau) g$
    (dampening $\tau$); the step direction is $d = g + \mu b$ (Nesterov) or $d = b$;
    $p \leftarrow p - \eta\, d$. Without momentum, $d = g$.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
    ) -> None:
        self.lr = _number(lr, "learning rate (lr)", "SGD")
        self.momentum = _number(momentum, "momentum", "SGD")
        self.dampening = _number(dampening, "dampening", "SGD", minimum=None)
        self.weight_decay = _number(weight_decay, "weight_decay", "SGD")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                f"SGD: Nesterov momentum requires momentum > 0 and dampening == 0, got "
                f"momentum={self.momentum}, dampening={self.dampening}"
            )
        super().__init__(params)
        self.defaults = {
            "lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
            "weight_decay": self.weight_decay, "nesterov": self.nesterov,
        }

    def _update(self, p: Tensor, grad: np.ndarray, state: dict[str, Any]) -> None:
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * p.data  # a new array: p.grad stays as it was
        if self.momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(grad, dtype=p.dtype, copy=True)
            else:
                buf *= self.momentum
                buf += (1.0 - self.dampening) * grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        p.data -= self.lr * grad


class Adam(Optimizer):
    r"""Adam, as ``torch.optim.Adam`` (L2 weight decay added to the gradient, no AMSGrad).

    At step t, with $g = \nabla_p L + \lambda p$:
    $m \leftarrow \beta_1 m + (1 - \beta_1) g$,  $v \leftarrow \beta_2 v + (1 - \beta_2) g^2$,
    $p \leftarrow p - \frac{\eta}{1 - \beta_1^t} \cdot
    \frac{m}{\sqrt{v} / \sqrt{1 - \beta_2^t} + \epsilon}$
    ($m, v$ start at zero; each parameter counts its own steps).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
    ) -> None:
        self.lr = _number(lr, "learning rate (lr)", "Adam")
        self.eps = _number(eps, "epsilon value (eps)", "Adam")
        self.weight_decay = _number(weight_decay, "weight_decay", "Adam")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"Adam: betas must be a pair of numbers, got {betas!r}")
        checked = []
        for i, beta in enumerate(betas):
            beta = _number(beta, f"beta parameter at index {i}", "Adam")
            if not beta < 1.0:
                raise ValueError(f"Adam: invalid beta parameter at index {i}: {beta!r}, must be < 1")
            checked.append(beta)
        self.betas = (checked[0], checked[1])
        super().__init__(params)
        self.defaults = {
            "lr": self.lr, "betas": self.betas, "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    def _update(self, p: Tensor, grad: np.ndarray, state: dict[str, Any]) -> None:
        beta1, beta2 = self.betas
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        state["step"] += 1
        step = state["step"]
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * p.data
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg *= beta1
        exp_avg += (1.0 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1.0 - beta2) * grad * grad
        step_size = self.lr / (1.0 - beta1**step)
        denom = np.sqrt(exp_avg_sq) / np.sqrt(1.0 - beta2**step)
        denom += self.eps
        p.data -= step_size * exp_avg / denom
