"""Each attention module, described once: what ``check``, ``reference``, ``compare`` and the
command line need to know about BAM, CBAM or any other module, in one file per module.

    from minibam import modules
    bam = modules.get("bam")                    # a Description
    config = bam.config(8, reduction_ratio=2)    # a Config: channels, options, mode, dtype
    module = bam.random(config, seed=0)          # an nn.BAM with random, non-trivial state
    twin = bam.twin(module)                      # the same module in PyTorch (imports torch)

A `Description` says: the ``nn`` class and how to build it from a `Config`; its options
(constructor arguments, with the command-line flag that sets each); which state_dict key
tells its reference cases apart, and how to read the rest of its configuration off the
parameter shapes; its PyTorch twin; its ``manual`` forward/backward pair, if any; the
configurations ``minibam check`` runs; and the likely causes of a failed comparison. ``checks`` and ``cli`` use only this interface, so
a new module is one file here and one line in `MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from minibam.nn import BatchNorm1d, BatchNorm2d, Module
from minibam.random import manual_seed
from minibam.tensor import Tensor

# name (``--module NAME``) -> the file that describes it; the first is the default.
MODULES: dict[str, str] = {
    "bam": "minibam.modules.bam",
    "cbam": "minibam.modules.cbam",
    "se": "minibam.modules.se",
}


def names() -> tuple[str, ...]:
    return tuple(MODULES)


def get(name: str) -> Description:
    """The description of the module called ``name``; ``KeyError`` listing the known names."""
    if name not in MODULES:
        raise KeyError(f"no attention module called {name!r}; known: {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name]).DESCRIPTION


def all_descriptions() -> list[Description]:
    return [get(name) for name in MODULES]


@dataclass(frozen=True)
class Option:
    """One constructor argument as the command line offers it (``--flag VALUE``, or a
    switch without a value), stored in a reference case as ``meta.<key>``."""

    flag: str
    key: str
    parse: Callable[[str], Any]  # text -> value; ValueError with a message otherwise
    default: Any  # a value, or a function of the channel count
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False
    # ``compare`` takes it as a flag: it cannot be read off the parameters' shapes.
    compare: bool = False
    default_text: str | None = None  # how help states a default that is a function

    def default_for(self, channels: int) -> Any:
        return self.default(channels) if callable(self.default) else self.default

    def text(self, value: Any) -> str:
        """How a value is written in ``meta.<key>`` and read back by `parse`."""
        return ",".join(value) if isinstance(value, tuple) else str(value)


@dataclass(frozen=True)
class Config:
    """One module's configuration as a reference case stores it: its channel count and
    constructor options, the mode, the dtype and its batch norms' eps and momentum."""

    module: str
    channels: int
    options: Mapping[str, Any]
    training: bool = True
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float64))
    eps: float = 1e-5
    momentum: float | None = None  # None: each batch norm keeps the module's own

    @property
    def description(self) -> Description:
        return get(self.module)

    def with_options(self, **changes: Any) -> Config:
        return replace(self, options={**self.options, **changes})

    def build(self) -> Module:
        return self.description.build(self)

    def describe(self) -> str:
        mode = "training" if self.training else "eval"
        return f"{self.description.summary(self)}, {mode}, {self.dtype}"


def at_least(minimum: int) -> Callable[[str], int]:
    """A parser of integers of at least ``minimum`` for an `Option`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def name_list(text: str) -> tuple[str, ...]:
    """"avg,max" -> ("avg", "max"): an `Option`'s list of names (checked by the module)."""
    return tuple(text.split(","))


def batch_norms(module: Module) -> list[Module]:
    return [m for m in module.modules() if isinstance(m, (BatchNorm1d, BatchNorm2d))]


def buffer_arrays(module: Module) -> dict[str, np.ndarray]:
    """Copies of the module's buffers (running statistics and counters)."""
    return {k: np.array(v.data if isinstance(v, Tensor) else v) for k, v in module.named_buffers()}


def randomise_batch_norms(module: Module, seed: int) -> None:
    """Random affine parameters and running statistics for every batch norm, from a stream
    of ``seed`` independent of the initialisation generator: the defaults (gamma = 1,
    beta = 0, mean = 0, var = 1) would hide a mistake in any of them."""
    rng = np.random.default_rng([seed, 1])
    for bn in batch_norms(module):
        c = bn.num_features
        bn.weight.data = rng.uniform(0.5, 1.5, c)
        bn.bias.data = 0.2 * rng.standard_normal(c)
        bn.running_mean.data = 0.2 * rng.standard_normal(c)
        bn.running_var.data = rng.uniform(0.5, 2.0, c)
        bn.num_batches_tracked = np.array(rng.integers(1, 1000), dtype=np.int64)


class Description:
    """One attention module. A subclass sets the class attributes and the methods that
    raise ``NotImplementedError``; everything else is shared."""

    name: str  # "bam": ``--module bam``
    title: str  # "BAM": how reports name it
    module_class: type[Module]
    format: str  # meta.format of its reference cases
    signature: str  # a state_dict key that only this module has
    options: tuple[Option, ...] = ()
    extra_options: tuple[str, ...] = ()  # options a comparison may set that no flag offers
    momentum: float = 0.1  # its batch norms' momentum when a case does not say

    # ------------------------------------------------------------ to implement
    def construct(self, channels: int, options: Mapping[str, Any]) -> Module:
        """The ``nn`` module, freshly initialised; ``ValueError``/``TypeError`` for a bad option."""
        raise NotImplementedError

    def summary(self, config: Config) -> str:
        """"BAM variant=paper, C=8, r=2, ...": the configuration in one line."""
        raise NotImplementedError

    def detail(self, config: Config) -> str:
        """The hyper-parameters shown in a ``minibam check`` row."""
        raise NotImplementedError

    def infer(self, channels: int, params: Mapping[str, np.ndarray],
              meta: Callable[[str, type], Any]) -> dict[str, Any]:
        """The options read off the parameter shapes (``ValueError`` when they do not fit
        ``channels``); ``meta(name, kind)`` reads a stored ``meta.<name>`` or gives None."""
        raise NotImplementedError

    def twin(self, module: Module) -> Any:
        """The same module in PyTorch (same configuration, state, mode and dtype); imports torch."""
        raise NotImplementedError

    def check_configs(self, thorough: bool) -> list[tuple[tuple[int, int, int, int], Config]]:
        """The (input shape, configuration) pairs that ``minibam check`` runs."""
        raise NotImplementedError

    def memory_elements(self, config: Config, shape: tuple[int, int, int, int]) -> int:
        """A generous count of the numbers alive at once in one forward and backward."""
        raise NotImplementedError

    # --------------------------------------------------------------- optional
    def manual_pair(self, config: Config) -> tuple[Callable[..., Any], Callable[..., Any]] | None:
        """The module written by hand in `minibam.manual`, if it is: ``forward(x, params)``
        -> (y, cache) for ``config`` and ``backward(dy, cache)`` -> {"x": dx, name: dparam}."""
        return None

    def label(self, config: Config) -> str:
        """The ``op`` column of a ``minibam check`` row."""
        return self.title

    def hints(self, arrays: Mapping[str, np.ndarray], config: Config, notes: list[str],
              failed: list[str], agrees: Callable[[Config], bool]) -> list[str]:
        """Likely causes of a failed comparison, each tested by ``agrees(other_config)``
        (a rerun of the whole comparison) where it can be."""
        return []

    # ----------------------------------------------------------------- shared
    def config(self, channels: int, training: bool = True, dtype: Any = np.float64,
               **options: Any) -> Config:
        """A `Config` with every option not given (or given as None) at its default."""
        unknown = set(options) - {o.key for o in self.options} - set(self.extra_options)
        if unknown:
            raise TypeError(f"{self.title} has no option {', '.join(sorted(unknown))}")
        values = {o.key: o.default_for(channels) for o in self.options}
        values.update({k: v for k, v in options.items() if v is not None})
        return Config(self.name, channels, values, training, np.dtype(dtype))

    def build(self, config: Config) -> Module:
        module = self.construct(config.channels, config.options)
        for bn in batch_norms(module):
            bn.eps = config.eps
            if config.momentum is not None:
                bn.momentum = config.momentum
        return module.to(config.dtype).train(config.training)

    def random(self, config: Config, seed: int) -> Module:
        """The module of ``config`` whose weights and batch-norm state depend only on
        ``seed``: PyTorch's default initialisation from ``mb.manual_seed(seed)`` (which
        this reseeds), then random batch norms (`randomise_batch_norms`)."""
        manual_seed(seed)
        module = self.build(replace(config, dtype=np.dtype(np.float64)))
        randomise_batch_norms(module, seed)
        return module.to(config.dtype)

    def meta(self, config: Config, has_batch_norm: bool) -> dict[str, Any]:
        """The ``meta.*`` entries of a reference case of ``config`` (without the seed)."""
        out: dict[str, Any] = {"format": self.format, "training": config.training}
        for option in self.options:
            value = config.options[option.key]
            out[option.key] = option.text(value) if isinstance(value, tuple) else value
        if has_batch_norm:
            out["eps"] = config.eps
            out["momentum"] = self.momentum if config.momentum is None else config.momentum
        return out


def every_option() -> Iterator[tuple[Option, list[Description]]]:
    """Each command-line option once (modules may share one, as BAM and CBAM share
    ``--reduction``), with the modules that take it."""
    seen: dict[str, tuple[Option, list[Description]]] = {}
    for description in all_descriptions():
        for option in description.options:
            seen.setdefault(option.flag, (option, []))[1].append(description)
    yield from seen.values()


def config_from_flags(name: str, channels: int, given: Mapping[str, Any], training: bool = True,
                      dtype: Any = np.float64) -> Config:
    """The `Config` of module ``name`` from command-line values by flag (None: not given).
    ``ValueError`` when a flag belongs only to other modules, naming them."""
    description = get(name)
    own = {o.flag for o in description.options}
    foreign = [flag for flag, value in given.items() if value is not None and flag not in own]
    if foreign:
        owner = next(owners[0] for o, owners in every_option() if o.flag == foreign[0])
        flags = [o.flag for o in owner.options if o.flag not in own]
        listed = " and ".join(flags) if len(flags) < 3 else ", ".join(flags[:-1]) + " and " + flags[-1]
        which = "option" if len(flags) == 1 else "options"
        verb = "is" if len(flags) == 1 else "are"
        raise ValueError(f"{listed} {verb} {owner.title}'s {which}: add --module {owner.name}")
    options = {o.key: given.get(o.flag) for o in description.options}
    return description.config(channels, training, dtype, **options)


__all__ = [
    "MODULES", "Config", "Description", "Option", "all_descriptions", "at_least", "batch_norms",
    "buffer_arrays", "config_from_flags", "every_option", "get", "name_list", "names",
    "randomise_batch_norms",
]
