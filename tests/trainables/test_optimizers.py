"""Optimizers are objects registered by name: adding one is one module and one `register` line, and the grid
(settings, plan, cost) and the trial (compile, candidates, its own metrics) take it from the registration alone.
The trial here runs on the in-process fake LM (`tests/fakes.py`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import dspy
import pytest
from fakes import RESPONDERS
from mlflow.tracking import MlflowClient

from grid.cost import expected_calls
from grid.spec import GridSpec, expand
from trainables.errors import ArbError
from trainables.optimizers import OPTIMIZERS, CompileRequest, Optimizer, Sizes, get_optimizer, register
from trainables.record import tracking
from trainables.registry import ModelRegistry
from trainables.tasks import math as math_task
from trainables.trial import execute_trial
from trainables.vocabulary import Trial

HINT = "Reply with the number alone."


class ToyInstruct(Optimizer):
    """Sets one instruction on every predictor: the smallest optimizer that changes what the model is asked."""

    name = "toy_instruct"
    params = frozenset({"instruction"})

    def check(self, params: Mapping[str, Any], sizes: Sizes) -> None:
        if not isinstance(params.get("instruction", HINT), str):
            raise ArbError("toy_instruct: instruction must be text", "quote it")

    def compile(self, request: CompileRequest) -> dspy.Module:
        program = request.program.deepcopy()
        for predictor in program.predictors():
            predictor.signature = predictor.signature.with_instructions(request.params.get("instruction", HINT))
        return program

    def search_calls(self, trial: Trial) -> float:
        return 0.0

    def candidates(self, program: dspy.Module) -> list[dict[str, Any]]:
        return [{"candidate": 0, "train_score": 100.0, "best": True, "instruction": HINT}]

    def trial_metrics(self, teacher: dspy.LM) -> dict[str, float]:
        return {"toy_rewrites": 1.0}


@pytest.fixture
def toy() -> Iterator[None]:
    register(ToyInstruct())  # the one registration line
    yield
    OPTIMIZERS.pop("toy_instruct")


def _spec(**overrides: Any) -> GridSpec:
    fields: dict[str, Any] = dict(name="toygrid", phase="test", models=["fake-math"], tasks=["math"],
                                  optimizer="toy_instruct", demos=[0], n_labeled=[6], n_val=3, n_eval=8,
                                  data="sample")  # fmt: skip
    return GridSpec(**{**fields, **overrides})


REGISTRY = ModelRegistry.model_validate({"models": {"fake-math": {"provider": "inprocess", "id": "fake-math"}}})


def test_every_shipped_optimizer_is_registered_under_its_own_name() -> None:
    assert list(OPTIMIZERS) == ["none", "bootstrap", "bootstrap_rs", "mipro", "gepa", "simba", "demo_ablation"]
    assert all(name == o.name for name, o in OPTIMIZERS.items())
    with pytest.raises(ValueError, match="registered twice"):
        register(get_optimizer("mipro"))
    with pytest.raises(ArbError, match="unknown optimizer 'toy_instruct'"):
        get_optimizer("toy_instruct")


def test_a_registered_optimizer_is_planned_checked_and_costed(toy: None) -> None:
    [trial] = expand(_spec(), REGISTRY)
    assert trial.optimizer == "toy_instruct" and expected_calls(trial) == 2 * 8  # baseline and optimized, no search
    with pytest.raises(ArbError, match="optimizer 'toy_instruct' does not take budget"):
        expand(_spec(optimizer_params={"budget": 3}), REGISTRY)
    with pytest.raises(ArbError, match="instruction must be text"):
        expand(_spec(optimizer_params={"instruction": 7}), REGISTRY)


def test_a_registered_optimizer_runs_a_whole_trial(toy: None, tracking_uri: str) -> None:
    splits = math_task.load("sample", seed=0, n_labeled=6, n_val=3, n_eval=8)
    answers = {ex.question: ex.answer for ex in splits.test}

    def respond(model: str, messages: list[dict[str, Any]]) -> str:
        # right only when asked for the number alone: the compile is what makes the difference
        asked = " ".join(str(m["content"]) for m in messages)
        question = next((q for q in answers if q in asked), "")
        answer = answers.get(question, "0") if HINT in asked else "0"
        return f"[[ ## reasoning ## ]]\nso\n\n[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"

    RESPONDERS["fake-math"] = respond
    [trial] = expand(_spec(), REGISTRY)
    exp = tracking.ensure_experiment(tracking_uri, trial.grid)
    runtime = {"tracking_uri": tracking_uri, "experiment_id": exp, "registry": REGISTRY.model_dump()}
    metrics = execute_trial({"trial": trial.model_dump(), "runtime": runtime})
    assert metrics["optimized_score"] == 100.0 and metrics["delta_pp"] == 100.0 - metrics["baseline_score"] > 50
    assert metrics["toy_rewrites"] == 1.0 and metrics["candidates"] == 1.0
    client = MlflowClient(tracking_uri)
    [run] = tracking.find_runs(client, exp, trial.key)
    assert run.data.params["provider"] == "inprocess" and run.data.tags["arb.status"] == "finished"
    assert "arb.prompt_uri" in run.data.tags  # a compiled instruction becomes a prompt version
    assert [m.value for m in client.get_metric_history(run.info.run_id, "candidate_train_score")] == [100.0]
