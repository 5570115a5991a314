"""Every attention module of `minibam.modules` as ``minibam check`` rows: the whole module
with random weights and batch-norm state, gradients for x and every parameter, against
finite differences and against its PyTorch twin (output, gradients, running buffers).

Each evaluation first restores the running buffers, so that the finite differences all
see the same module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minibam import modules
from minibam.checks.catalogue import shape_text
from minibam.checks.runner import Case, Probe
from minibam.modules import Config, buffer_arrays
from minibam.tensor import Tensor


def module_case(x_shape: tuple[int, int, int, int], config: Config) -> Case:
    description = config.description

    def draw(rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"seed": np.array(rng.integers(2**31)), "x": rng.standard_normal(x_shape)}

    def build(inputs: dict[str, np.ndarray]) -> Any:
        return description.random(config, seed=int(inputs["seed"]))

    def minibam_probe(inputs: dict[str, np.ndarray]) -> Probe:
        module = build(inputs)
        names = {name for name, _ in module.named_parameters()}
        initial = {k: v for k, v in module.state_dict().items() if k not in names}
        x = Tensor(inputs["x"], requires_grad=True)

        def run() -> Tensor:
            module.load_state_dict(initial, strict=False)
            return module(x)

        return Probe({"x": x, **dict(module.named_parameters())}, run, lambda: buffer_arrays(module))

    def torch_probe(torch: Any, inputs: dict[str, np.ndarray]) -> Probe:
        from minibam.torch_oracle import numpy_state

        model = description.twin(build(inputs))
        x = torch.tensor(inputs["x"], requires_grad=True)
        return Probe({"x": x, **dict(model.named_parameters())}, lambda: model(x),
                     lambda: numpy_state(model, buffers_only=True))

    count = sum(p.data.size for p in config.build().parameters())
    shapes = (f"x {shape_text(x_shape)}, {description.detail(config)}, {count} weights; "
              f"{'train' if config.training else 'eval'}")
    return Case(description.label(config), shapes, draw, minibam_probe, torch_probe)


def module_cases(thorough: bool = False) -> list[Case]:
    """Every registered module's configurations, in the registry's order."""
    return [module_case(shape, config) for description in modules.all_descriptions()
            for shape, config in description.check_configs(thorough)]
