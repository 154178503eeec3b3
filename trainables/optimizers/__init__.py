"""The optimizers a grid may name, one module each, registered here by name. Imported by `grid/` (settings checks,
cost estimates), the trial and the analysis; imports nothing above `trainables.vocabulary` (see `base`).

Adding one: a module with an `Optimizer` subclass (docs/layout.md shows a worked example) and a `register` line.
"""

from __future__ import annotations

from trainables.errors import unknown_name
from trainables.optimizers.base import CompileRequest, Optimizer, Sizes, expected_calls
from trainables.optimizers.bootstrap import Bootstrap
from trainables.optimizers.bootstrap_rs import BootstrapRandomSearch
from trainables.optimizers.demo_ablation import DemoAblation
from trainables.optimizers.gepa import Gepa
from trainables.optimizers.mipro import Mipro
from trainables.optimizers.none import NoOptimizer
from trainables.optimizers.simba import Simba

__all__ = ["OPTIMIZERS", "CompileRequest", "Optimizer", "Sizes", "expected_calls", "get_optimizer", "register"]

OPTIMIZERS: dict[str, Optimizer] = {}
"""Every optimizer a grid may name, by that name."""


def register(optimizer: Optimizer) -> Optimizer:
    """Make `optimizer` known to grid files by its `name` (a second one of the same name is an error)."""
    if optimizer.name in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer.name!r} is registered twice")
    OPTIMIZERS[optimizer.name] = optimizer
    return optimizer


def get_optimizer(name: str) -> Optimizer:
    """The optimizer a grid calls `name`, or an error listing the known names."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise unknown_name("optimizer", name, OPTIMIZERS) from None


register(NoOptimizer())
register(Bootstrap())
register(BootstrapRandomSearch())
register(Mipro())
register(Gepa())
register(Simba())
register(DemoAblation())
