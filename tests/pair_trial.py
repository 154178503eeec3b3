"""One trial in its own process whose first prompt-registry lookup waits for a second process's (a file barrier in
directory argv[1]): two of these run two trials that both find no prompt and both create it. Used by
tests/trainables/test_trial.py; argv[2] is the trial's config as JSON."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mlflow.tracking._model_registry.client import ModelRegistryClient

from trainables.trial import execute_trial

barrier = Path(sys.argv[1])
original = ModelRegistryClient.get_registered_model
missed: list[bool] = []


def lookup(self: Any, name: str) -> Any:
    try:
        return original(self, name)
    except Exception:
        if not missed:
            missed.append(True)
            (barrier / f"missed-{os.getpid()}").touch()
            deadline = time.monotonic() + 120
            while len(list(barrier.glob("missed-*"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        raise


ModelRegistryClient.get_registered_model = lookup  # type: ignore[method-assign]
execute_trial(json.loads(sys.argv[2]))
