"""StrategyQA implicit multi-step yes/no questions (`ChilleD/StrategyQA`), answered by a tool-using agent.

Input: a question whose answer needs several unstated steps ("Could a ... fit inside a ...?"). Output: yes or no.
Program: `dspy.ReAct` with two offline tools, at most `MAX_ITERS` steps:
- `search_facts(query)`: BM25 over a knowledge base of the dataset's own evidence, i.e. every term description
  and supporting fact of the loaded splits (the offline stand-in for the Wikipedia search of the original setup);
- `calculate(expression)`: arithmetic and comparisons, evaluated by `simpleeval` (no names, no calls, no code).
Metric: accuracy; the answer is read as yes/no like BoolQ's (first word; true/false accepted).

Data: `ChilleD/StrategyQA` holds data files and no script; pinned at the commit two other projects pin (7055626;
1,603 train / 687 test).
"""

from __future__ import annotations

from typing import Any, Literal

import dspy
from simpleeval import SimpleEval

from trainables.tasks.analysis import as_yes_no, explain_yes_no
from trainables.tasks.base import HubData, Splits, Task, exact_field, feedback_metric, versioned
from trainables.tasks.retrieval import Bm25Index

VERSION = "2"
DATA = HubData(
    "ChilleD/StrategyQA",
    "705562638fe1d8ca6bb98c66fc8f94d45fda8c83",
    None,
    sample_dir="strategyqa",
    pool_split="train",
    test_split="test",
    columns=("qid", "question", "answer"),
)
MAX_ITERS = 4
TOP_K = 3


class AnswerStrategically(dspy.Signature):
    """Answer the yes/no question. Break it into the facts you need, look them up, then decide."""

    question: str = dspy.InputField()
    answer: Literal["yes", "no"] = dspy.OutputField()


def make_tools(index: Bm25Index) -> list[dspy.Tool]:
    """The agent's tools, bound to one knowledge base."""

    def search_facts(query: str) -> str:
        """Search the knowledge base; returns up to three facts relevant to the query."""
        hits = index.search(query, k=TOP_K)
        return "\n".join(f"- {h}" for h in hits) if hits else "no matching facts"

    def calculate(expression: str) -> str:
        """Evaluate an arithmetic expression or comparison, e.g. `3 * 365 > 1000`."""
        try:
            return str(SimpleEval().eval(expression))
        except Exception as exc:  # the model sees why its expression failed and can fix it
            return f"error: {type(exc).__name__}: {exc}"

    return [dspy.Tool(search_facts), dspy.Tool(calculate)]


class Agent(dspy.Module):
    def __init__(self, corpus: tuple[str, ...]) -> None:
        super().__init__()
        self.react = dspy.ReAct(AnswerStrategically, tools=make_tools(Bm25Index(corpus)), max_iters=MAX_ITERS)

    def forward(self, question: str) -> dspy.Prediction:
        return self.react(question=question)


def metric(example: dspy.Example, pred: Any, trace: Any = None) -> float:
    return float(as_yes_no(getattr(pred, "answer", None)) == example.answer)


feedback = feedback_metric(metric, "answer", explain_yes_no, lambda ex: f"The correct answer is {ex.answer}.")


def _facts(row: dict[str, Any]) -> list[str]:
    facts = row.get("facts") or []
    facts = [facts] if isinstance(facts, str) else list(facts)
    return [f for f in (row.get("description"), *facts) if f]


def _to_example(row: dict[str, Any], idx: int, split: str) -> dspy.Example:
    return dspy.Example(
        id=f"{split}-{row['qid']}", question=row["question"], answer="yes" if row["answer"] else "no"
    ).with_inputs("question")


def load(source: str, seed: int, n_labeled: int, n_val: int, n_eval: int) -> Splits:
    """StrategyQA's train split feeds train and val, its test split is the test set; their evidence is the corpus."""
    return DATA.splits(
        _to_example, source, seed, n_labeled, n_val, n_eval, passages=_facts, passage_columns=("description", "facts")
    )


def program(splits: Splits) -> dspy.Module:
    return Agent(splits.corpus)


TASK = Task(
    test_split=687,
    name="agentic", version=versioned(VERSION, DATA), load=load, program=program, metric=metric, data=(DATA,),
    feedback=feedback,
    metric_name="accuracy",
    strict=exact_field("answer"),
    expected=("answer",),
)  # fmt: skip
