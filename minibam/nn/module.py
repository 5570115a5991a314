"""``Module``, ``Parameter`` and ``Sequential``: PyTorch's module system, in small.

A module owns parameters (tensors that train), buffers (state that does not train,
such as batch norm's running statistics) and child modules, each under a name.
Their dotted paths (``spatial_att.gate_s.gate_s_bn_di_0.running_var``) are the keys of
``state_dict()``, exactly as PyTorch spells them, so checkpoints move between the two.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from minibam.tensor import Tensor, as_float_array


class Parameter(Tensor):
    """A Tensor a module trains: ``requires_grad=True`` unless asked otherwise."""

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class StateDictError(RuntimeError, KeyError, ValueError):
    """A refused ``load_state_dict``. A RuntimeError as in PyTorch; also a KeyError and a
    ValueError, so that any of the three natural ``except`` clauses catches it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


Buffer = Tensor | np.ndarray  # float statistics are Tensors; counters are int64 arrays


def _cast_tensor(tensor: Tensor, dtype: np.dtype) -> None:
    tensor.data = tensor.data.astype(dtype, copy=False)
    if tensor.grad is not None:
        tensor.grad = tensor.grad.astype(dtype, copy=False)


class Module:
    """Base class of every layer; subclasses set attributes and define ``forward``."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() is called"
            )
        # As in PyTorch, a registered name keeps its kind: silently turning a parameter
        # into a plain attribute would drop it from parameters() and state_dict().
        if name in self._parameters and not isinstance(value, Parameter):
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} "
                    f"(a Parameter or None expected)"
                )
            self._parameters[name] = None
            return
        if name in self._modules and not isinstance(value, Module):
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as child module {name!r} "
                    f"(a Module or None expected)"
                )
            self._modules[name] = None
            return
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            self._buffers[name] = value  # e.g. a new running_mean replaces the old
            return
        if isinstance(value, Parameter):
            target = self._parameters
        elif isinstance(value, Module):
            target = self._modules
        else:
            for registry in (self._parameters, self._buffers, self._modules):
                registry.pop(name, None)
            object.__setattr__(self, name, value)
            return
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not target:
                registry.pop(name, None)
        target[name] = value  # an existing entry keeps its place, so state_dict order holds
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: look in the registries.
        for registry in ("_parameters", "_buffers", "_modules"):
            table = self.__dict__.get(registry)
            if table is not None and name in table:
                return table[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        self._check_name(name, "_parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"register_parameter: {name!r} must be a Parameter or None, "
                f"got {type(param).__name__}"
            )
        self._parameters[name] = param

    def register_buffer(self, name: str, value: Buffer | None) -> None:
        self._check_name(name, "_buffers")
        self._buffers[name] = value

    def add_module(self, name: str, module: Module | None) -> None:
        self._check_name(name, "_modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module, got {type(module).__name__}")
        self._modules[name] = module

    def _check_name(self, name: str, registry: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"module, parameter and buffer names must be str, got {type(name).__name__}")
        if not name or "." in name:
            raise ValueError(f"module, parameter and buffer names must be non-empty without '.', got {name!r}")
        # A name already taken by an attribute or another registry would shadow, or be
        # shadowed by, the new entry (PyTorch refuses it the same way).
        if name not in getattr(self, registry) and hasattr(self, name):
            raise KeyError(f"attribute {name!r} already exists")

    # ----------------------------------------------------------------- walking
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first, each once."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            path, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield path, module
            children = [(f"{path}.{n}" if path else n, m) for n, m in module._modules.items() if m is not None]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct children, each once (a child under two names is listed under the first)."""
        seen: set[int] = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry: str, prefix: str, recurse: bool) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for path, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{path}.{name}" if path else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Buffer]]:
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Buffer]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    # ------------------------------------------------------------------- modes
    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, (bool, np.bool_)):
            raise ValueError(f"train: mode must be a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget accumulated gradients (``None``, as PyTorch 2 does, or zeros)."""
        for param in self.parameters():
            if set_to_none or param.grad is None:
                param.grad = None
            else:
                param.grad = np.zeros_like(param.data)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for param in self.parameters():
            param.requires_grad = bool(requires_grad)
        return self

    # ------------------------------------------------------------------ dtypes
    def to(self, dtype: Any) -> Module:
        """Convert every parameter and float buffer to ``dtype`` in place."""
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"to: modules hold float32 or float64, not {dtype}")
        for module in self.modules():
            for tensor in module._parameters.values():
                if tensor is not None:
                    _cast_tensor(tensor, dtype)
            for name, buffer in module._buffers.items():
                if isinstance(buffer, Tensor):
                    _cast_tensor(buffer, dtype)
                elif isinstance(buffer, np.ndarray) and buffer.dtype.kind == "f":
                    module._buffers[name] = buffer.astype(dtype)  # counters stay integers
        return self

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    # -------------------------------------------------------------- state dict
    def _state_entries(self) -> Iterator[tuple[str, Module, str, str]]:
        """(dotted key, owning module, registry, local name), in PyTorch's order:
        per module, its parameters then its buffers, then its children. Unlike
        ``named_modules``, a module reachable under two names is listed under both,
        as in PyTorch's ``state_dict``."""
        stack: list[tuple[str, Module]] = [("", self)]
        while stack:
            path, module = stack.pop()
            for registry in ("_parameters", "_buffers"):
                for name, value in getattr(module, registry).items():
                    if value is not None:
                        yield (f"{path}.{name}" if path else name), module, registry, name
            children = [(f"{path}.{n}" if path else n, m) for n, m in module._modules.items() if m is not None]
            stack.extend(reversed(children))

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed by PyTorch's dotted names."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for key, module, registry, name in self._state_entries():
            value = getattr(module, registry)[name]
            state[key] = np.array(value.data if isinstance(value, Tensor) else value, copy=True)
        return state

    def load_state_dict(self, state: Any, strict: bool = True) -> IncompatibleKeys:
        """Load arrays (anything ``np.asarray`` takes) into parameters and buffers.

        Each value is cast to the dtype of what it fills. Shape mismatches are always
        refused; with ``strict``, missing and unexpected keys are too. Everything is
        checked before anything is written, so a refused load changes nothing.

        As in PyTorch, a checkpoint without batch norm's ``num_batches_tracked``
        (any saved before PyTorch 0.4.1 added that buffer) still loads: the counter
        keeps its current value.
        """
        if not isinstance(strict, (bool, np.bool_)):
            raise TypeError(f"load_state_dict: strict must be a bool, got {strict!r}")
        if not hasattr(state, "keys") or not hasattr(state, "__getitem__"):
            raise TypeError(f"load_state_dict expects a mapping of names to arrays, got {type(state).__name__}")
        entries = {key: (module, registry, name) for key, module, registry, name in self._state_entries()}
        missing = [k for k, (_, _, name) in entries.items()
                   if k not in state and name != "num_batches_tracked"]
        unexpected = [k for k in state.keys() if k not in entries]
        problems: list[str] = []
        staged: list[tuple[Module, str, str, np.ndarray]] = []
        for key, (module, registry, name) in entries.items():
            if key not in state:
                continue
            current = getattr(module, registry)[name]
            target = current.data if isinstance(current, Tensor) else np.asarray(current)
            try:
                raw = state[key].data if isinstance(state[key], Tensor) else np.asarray(state[key])
                incoming = as_float_array(raw) if isinstance(current, Tensor) else np.array(raw)
            except (TypeError, ValueError, RuntimeError) as error:
                problems.append(f"{key}: cannot be read as an array ({error})")
                continue
            if incoming.shape != target.shape:
                problems.append(
                    f"{key}: shape {incoming.shape} in the checkpoint, {target.shape} in the model"
                )
                continue
            if not isinstance(current, Tensor):
                problem = _integer_problem(incoming, target.dtype)
                if problem:
                    problems.append(f"{key}: {problem}")
                    continue
            staged.append((module, registry, name, incoming.astype(target.dtype, copy=True)))
        if strict:
            problems += [f"{k}: missing from the checkpoint" for k in missing]
            problems += [f"{k}: unexpected key (no such parameter or buffer)" for k in unexpected]
        if problems:
            raise StateDictError(
                f"Error(s) in loading state_dict for {type(self).__name__} "
                f"({len(problems)} key(s); nothing was loaded):\n  " + "\n  ".join(problems)
            )
        for module, registry, name, array in staged:
            current = getattr(module, registry)[name]
            if isinstance(current, Tensor):
                current.data = array
            else:
                getattr(module, registry)[name] = array
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # --------------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        extra = self.extra_repr()
        if extra:
            lines.extend(extra.split("\n"))
        for name, module in self.named_children():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        if not lines:
            return f"{type(self).__name__}()"
        if len(lines) == 1 and not self._modules:
            return f"{type(self).__name__}({lines[0]})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _integer_problem(incoming: np.ndarray, dtype: np.dtype) -> str | None:
    """Why ``incoming`` cannot fill an integer buffer (``num_batches_tracked``) of
    ``dtype`` without changing its value, or None. A cast would turn NaN, 1e30 or 3.7
    into some unrelated count without a word."""
    if incoming.dtype.kind not in "biuf":
        return f"dtype {incoming.dtype} cannot fill an integer buffer"
    if incoming.dtype.kind == "f" and not np.all(np.isfinite(incoming) & (incoming == np.round(incoming))):
        return f"value {incoming.tolist()!r} is not a whole number, so it cannot fill an integer buffer"
    info = np.iinfo(dtype)
    if incoming.size and (incoming.min() < info.min or incoming.max() > info.max):
        return f"value {incoming.tolist()!r} does not fit the buffer's {dtype}"
    return None


class Sequential(Module):
    """Children called in order; ``Sequential(a, b)`` names them "0", "1", and
    ``add_module(name, m)`` keeps the name given (as the BAM gates do)."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.add_module(str(index), module)

    def forward(self, x: Any) -> Any:
        for module in self.children():
            x = module(x)
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int | slice | str) -> Module:
        if isinstance(index, str):
            return self._modules[index]
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))  # keeps the children's names
        if not -len(items) <= index < len(items):
            raise IndexError(f"index {index} is out of range for a Sequential of length {len(items)}")
        return items[index][1]
