"""Shared fixtures (a stub LM server that knows the sample math answers, a throwaway MLflow store), and how the
suite is laid out and run: tests mirror the code (`tests/grid/`, `tests/trainables/`, `tests/analysis/`), and
`tests/integration/` holds the ones that start real Ray clusters, servers, Chromium, Slurm or real models; those
are marked `integration` (`pytest -m "not integration"` runs the rest in a few minutes).

`make test` runs the suite on two pytest-xdist workers: one runs the integration files one after another (each
starts clusters, servers or Ray, CPU-bound on two cores: two at once only slowed each other), the other the
real-Slurm study (mostly waiting on its jobs) and then the unit test files (`pytest_xdist_make_scheduler` below)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from stub_server import StubServer, table_responder

from trainables.tasks import math as math_task

SLURM = "tests/integration/test_slurm.py"
LONGEST_FIRST = ("test_slurm.py", "test_cluster.py", "test_embedded_sweep.py", "test_head_replacement.py")
"""Files whose tests take minutes (`pytest --durations`): scheduled before everything else."""


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's by-file scheduling (`--no-loadscope-reorder` keeps the order below), with every integration file but
    the Slurm study in one work unit, which one worker takes whole."""
    from xdist.scheduler import LoadFileScheduling

    class IntegrationApart(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            together = nodeid.startswith("tests/integration/") and not nodeid.startswith(SLURM)
            return "integration" if together else super()._split_scope(nodeid)

    return IntegrationApart(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        where = item.path.relative_to(here).as_posix()
        if where.startswith("integration/"):
            item.add_marker(pytest.mark.integration)

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST) + (0 if "integration" in item.path.parts else 1)

    items.sort(key=rank)  # stable: within a rank, files and tests keep their order


@pytest.fixture(autouse=True)
def arb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own results directory, so no test sees another's LM cache or Ray results."""
    home = tmp_path / "arb-home"
    monkeypatch.setenv("ARB_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def math_splits() -> math_task.Splits:
    """The sample math data as the smoke-sized trial sees it (seed 0)."""
    return math_task.load("sample", seed=0, n_labeled=6, n_val=3, n_eval=8)


@pytest.fixture()
def known_answers(math_splits: math_task.Splits) -> dict[str, str]:
    """Correct answers for the first 5 test questions and all train/val ones; the stub says "0" otherwise."""
    answers = {ex.question: ex.answer for ex in math_splits.test[:5]}
    answers.update({ex.question: ex.answer for ex in math_splits.train + math_splits.val})
    return answers


@pytest.fixture()
def stub(known_answers: dict[str, str]) -> Iterator[StubServer]:
    with StubServer(["llama3.2", "gpt-4o", "qwen3:4b"], table_responder(known_answers)) as server:
        yield server


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, made once per test process: MLflow builds a new file through its ~60 schema
    migrations (alembic, `mlflow/store/db/utils.py:_initialize_tables`), about 1.5 s of CPU each time."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts")).engine.dispose()
    return path


@pytest.fixture()
def new_store(tmp_path: Path, empty_store: Path) -> Callable[[str], str]:
    """`new_store(name)`: the URI of a new empty store `name` in the test's directory, a copy of `empty_store`.
    (A store MLflow creates itself is what `arb run` in a new ARB_HOME meets: the CLI and integration tests.)"""

    def make(name: str) -> str:
        shutil.copyfile(empty_store, tmp_path / name)
        return f"sqlite:///{tmp_path / name}"

    return make


@pytest.fixture()
def tracking_uri(new_store: Callable[[str], str]) -> str:
    return new_store("mlflow.db")


def expected_baseline(math_splits: math_task.Splits, known_answers: dict[str, str]) -> float:
    """Score the stub earns by construction: known questions right, the rest answered "0"."""
    right = sum(ex.answer == known_answers.get(ex.question, "0") for ex in math_splits.test)
    return 100.0 * right / len(math_splits.test)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arb: error:"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in lines[0]


def assert_preflight_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """What the checks before a grid (`arb check`, and `arb run` first) print: a line per problem, then the
    one-line verdict; exit code 2, no traceback; each needle in some problem's line."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    *problems, verdict = proc.stderr.strip("\n").splitlines()
    assert problems and all(line.startswith("  ✘ ") for line in problems), proc.stderr
    assert verdict.startswith(f"arb: error: {len(problems)} problem(s) found before the first trial"), proc.stderr
    for needle in needles:
        assert any(needle in line for line in problems), (needle, proc.stderr)
