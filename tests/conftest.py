"""Shared fixtures: a stub LM server that knows the sample math answers, and a throwaway MLflow store."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from stub_server import StubServer, table_responder

from trainables.tasks import math as math_task


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


@pytest.fixture()
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def expected_baseline(math_splits: math_task.Splits, known_answers: dict[str, str]) -> float:
    """Score the stub earns by construction: known questions right, the rest answered "0"."""
    right = sum(ex.answer == known_answers.get(ex.question, "0") for ex in math_splits.test)
    return 100.0 * right / len(math_splits.test)
