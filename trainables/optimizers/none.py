"""`none`: the unoptimized program. The trial scores its baseline once and that is the result."""

from __future__ import annotations

from trainables.optimizers.base import Optimizer
from trainables.vocabulary import Trial


class NoOptimizer(Optimizer):
    name = "none"
    compiles = False
    compares = False

    def conditions(self, trial: Trial) -> int:
        return 1
