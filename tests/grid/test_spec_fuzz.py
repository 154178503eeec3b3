"""Property: whatever a grid file holds, loading it gives a GridSpec or an ArbError, never another exception."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid.spec import GridSpec, expand, load_grid
from trainables.errors import ArbError
from trainables.registry import load_registry

FIELDS = ["name", "phase", "models", "tasks", "optimizer", "teacher", "demos", "n_labeled", "n_val", "n_eval",
          "seeds", "data", "optimizer_params", "max_concurrent_trials", "include", "bogus"]  # fmt: skip
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
documents = st.one_of(st.dictionaries(st.sampled_from(FIELDS), values, max_size=8), values)
REGISTRY = load_registry()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_grid_loader_never_crashes(doc: object) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.yaml"
        path.write_text(yaml.safe_dump(doc))
        try:
            spec = load_grid(path)
        except ArbError:
            return
        assert isinstance(spec, GridSpec)
        with contextlib.suppress(ArbError):
            expand(spec, REGISTRY)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_grid_loader_on_arbitrary_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.yaml"
        path.write_text(text)
        with contextlib.suppress(ArbError):
            load_grid(path)
