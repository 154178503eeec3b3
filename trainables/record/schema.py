"""The names of the MLflow record, declared once: what every writer sets and every reader (analysis, `arb status`,
the UI's views) looks up. Tag values are strings; metrics are floats in the units their writer states
(`trainables.record.results.metrics`). A name changes here or nowhere (docs/mlflow.md lists them for users).

Modeled on inspect_ai's typed log (`inspect_ai/log/_log.py`): the record's vocabulary is code, not string literals
scattered across writers and readers.
"""

from __future__ import annotations

PREFIX = "arb"
"""Of every tag, and of the names of registered prompts (`arb.<task>.<model>`) and models (`arb.<grid>.<task>`)."""


class Tag:
    """Run and experiment tags."""

    # a trial's run
    KEY = "arb.trial_key"
    """`Trial.key`: the work's identity; a run with one is a trial (reports count only these)."""
    POINT = "arb.point_key"
    """`Trial.point_key`: the grid point, whatever the settings (what the key was before it covered them)."""
    STATUS = "arb.status"
    """`finished`, `compile_failed`, `running`, `errored`."""
    PHASE = "arb.phase"
    GRID = "arb.grid"
    TASK_VERSION = "arb.task_version"
    TRUNCATED = "arb.truncated"
    """`true` when a call may have been cut by its context window (or refused for it)."""
    STOP_REASON = "arb.stop_reason"
    """How a sequential trial stopped (`trainables.stats.sequential`)."""
    COMPILE_ERROR = "arb.compile_error"
    BASELINE_RUN = "arb.baseline_run"
    """The shared baseline's run, when the trial read its baseline from one (`trainables.baselines`)."""
    OUTCOME = "arb.outcome"
    SANDBOX = "arb.sandbox"
    SOURCE_RUN = "arb.source_run"
    """A demo ablation's source trial."""
    MODEL_URI = "arb.model_uri"
    PROMPT_URI = "arb.prompt_uri"
    ERROR_CLASS = "arb.error_class"
    ERROR = "arb.error"

    # runs that are not trials
    KIND = "arb.kind"
    """`baseline`, `evaluation`, `race`, `report`: what a run that is not a trial is."""
    BASELINE_KEY = "arb.baseline_key"
    BASELINE_DONE = "arb.baseline_done"
    TRIAL_RUN = "arb.trial_run"
    """An evaluation run's trial run."""
    CONDITION = "arb.condition"
    EXAMPLE_ID = "arb.example_id"
    SCORE = "arb.score"
    REPORT_TIME = "arb.report_time"

    # races (`arb route`) and their registered decisions
    RACE_KEY = "arb.race_key"
    TASK = "arb.task"
    RACE_ROUNDS = "arb.race_rounds"
    RACE_DECISION = "arb.race_decision"
    ROUTE_TO = "arb.route_to"
    MODEL = "arb.model"
    DECISION = "arb.decision"
    REFERENCE = "arb.reference"

    # a registered prompt version
    RUN_ID = "arb.run_id"

    # a grid's experiment
    GRID_SPEC = "arb.grid_spec"
    """The `GridSpec` JSON the grid last ran with (`arb resume` reads it)."""
    REGISTRY_PATH = "arb.registry_path"
    MODELS = "arb.models"
    """The registry entries of the grid's models as it ran them (JSON, name → entry)."""


class Metric:
    """Run metrics of a trial (floats; `trainables.record.results.metrics` writes most of them)."""

    BASELINE_SCORE = "baseline_score"
    """The baseline condition's score (0–100, the task's headline metric)."""
    OPTIMIZED_SCORE = "optimized_score"
    """The optimized condition's score (0–100)."""
    DELTA_PP = "delta_pp"
    """optimized − baseline, in percentage points."""
    BASELINE_STRICT = "baseline_strict"
    """The baseline's strict (exact-field) score; = the headline where a task has none."""
    OPTIMIZED_STRICT = "optimized_strict"
    """The optimized condition's strict score."""
    N_EVALUATED = "n_evaluated"
    N_DEMOS_CHOSEN = "n_demos_chosen"
    LATENCY_MS_P50 = "latency_ms_p50"
    LATENCY_MS_P95 = "latency_ms_p95"
    PROMPT_TOKENS = "prompt_tokens"
    COMPLETION_TOKENS = "completion_tokens"
    COST_USD = "cost_usd"
    """The trial's API dollars (student and teacher tokens × the registry's prices)."""
    LM_CALLS = "lm_calls"
    THINKING_TOKENS = "thinking_tokens"
    CACHE_HITS = "cache_hits"
    EVAL_LM_CALLS = "eval_lm_calls"
    OPTIMIZE_LM_CALLS = "optimize_lm_calls"
    OPTIMIZE_PROMPT_TOKENS = "optimize_prompt_tokens"
    OPTIMIZE_COMPLETION_TOKENS = "optimize_completion_tokens"
    TEACHER_LM_CALLS = "teacher_lm_calls"
    PARSE_FAILURES_BASELINE = "parse_failures_baseline"
    PARSE_FAILURES_OPTIMIZED = "parse_failures_optimized"
    LM_ERRORS = "lm_errors"
    TRUNCATED_CALLS = "truncated_calls"
    """Calls that may have been cut by the context window."""
    TRUNCATED_CALLS_BASELINE = "truncated_calls_baseline"
    TRUNCATED_CALLS_OPTIMIZE = "truncated_calls_optimize"
    TRUNCATED_CALLS_OPTIMIZED = "truncated_calls_optimized"
    CONTEXT_ERRORS = "context_errors"
    """Calls refused for exceeding the context window."""
    SEQ_CI_LOW = "seq_ci_low"
    SEQ_CI_HIGH = "seq_ci_high"
    SEQ_P_VALUE = "seq_p_value"
    EVAL_CALLS_SAVED = "eval_calls_saved"
    """Evaluation calls a sequential trial did not need."""
    OPTIMIZE_SECONDS = "optimize_seconds"
    EVAL_SECONDS = "eval_seconds"
    EVAL_IN_FLIGHT = "eval_in_flight"
    """Mean requests in flight while evaluating."""
    BASELINE_SHARED = "baseline_shared"
    """1 when the trial read its baseline from a shared baseline run (`Tag.BASELINE_RUN`)."""
    INSTRUCTION_EFFECT_PP = "instruction_effect_pp"
    DEMO_EFFECT_PP = "demo_effect_pp"


ABLATION_KS = range(6)
"""Demo counts a demo ablation scores and the report reads (`score_k0` … `score_k5`): the study's k = 0 … 5."""


def score_k(k: int) -> str:
    """The metric holding a demo ablation's score with the first k demos."""
    return f"score_k{k}"


def registered_name(*parts: str) -> str:
    """A Prompt or Model Registry name from its parts (registry names allow [A-Za-z0-9_.-])."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "-", ".".join([PREFIX, *parts]))
