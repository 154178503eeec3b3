"""Grid files: validation, includes, expansion and the trial key."""

from __future__ import annotations

from pathlib import Path

import pytest

from grid.spec import expand, load_grid, stages, trial_key
from trainables.errors import ArbError
from trainables.registry import load_registry

REGISTRY = load_registry()


def _write(tmp_path: Path, text: str, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_smoke_expands_to_one_mipro_trial_on_the_capable_model() -> None:
    trials = expand(load_grid("smoke"), REGISTRY)
    assert [(t.model, t.task, t.optimizer) for t in trials] == [("qwen-coder-1.5b", "extraction", "mipro")]


def test_cross_product_and_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "name: g\nmodels: [llama3.2, mistral]\ntasks: [math]\ndemos: [0, 5]\nn_labeled: [1, 2, 4]\n"
    )
    trials = expand(load_grid(path), REGISTRY)
    assert len(trials) == 2 * 1 * 2 * 3
    # model-major order keeps trials of one model together
    assert [t.model for t in trials] == ["llama3.2"] * 6 + ["mistral"] * 6


def test_trial_key_is_stable_and_sensitive() -> None:
    base = dict(
        model="m",
        task="math",
        task_version="1",
        optimizer="mipro",
        teacher=None,
        demos=2,
        n_labeled=6,
        seed=0,
    )
    assert trial_key(**base) == trial_key(**dict(reversed(list(base.items()))))
    for field, other in [
        ("model", "x"),
        ("task_version", "2"),
        ("demos", 3),
        ("seed", 1),
        ("teacher", "gpt-4o"),
    ]:
        assert trial_key(**{**base, field: other}) != trial_key(**base)


def test_eval_size_is_in_the_key_not_in_the_point(tmp_path: Path) -> None:
    a = expand(load_grid(_write(tmp_path, "name: g\nmodels: [phi4]\ntasks: [math]\nn_eval: 10\n")), REGISTRY)
    b = expand(
        load_grid(_write(tmp_path, "name: g\nmodels: [phi4]\ntasks: [math]\nn_eval: 20\n", "h.yaml")),
        REGISTRY,
    )
    assert a[0].point_key == b[0].point_key and a[0].key != b[0].key


def test_include_merges_base(tmp_path: Path) -> None:
    _write(tmp_path, "name: base\nmodels: [phi4]\ntasks: [math]\ndemos: [3]\n", "base.yaml")
    spec = load_grid(_write(tmp_path, "include: base.yaml\nname: child\ndemos: [0]\n"))
    assert (spec.name, spec.models, spec.demos) == ("child", ["phi4"], [0])


BAD_GRIDS = [
    ("name: g\nmodels: [phi4]\ntasks: [math]\nbogus: 1\n", "bogus"),
    ("name: g\nmodels: []\ntasks: [math]\n", "models"),
    ("name: g\nmodels: [phi4, phi4]\ntasks: [math]\n", "duplicates"),
    ("name: g\nmodels: [phi4]\ntasks: [math]\ndemos: [-1]\n", "non-negative"),
    ("name: g\nmodels: phi4\ntasks: [math]\n", "models"),
    ("name: g\nmodels: [phi4]\ntasks: [math]\nn_eval: zero\n", "n_eval"),
    ("[1, 2]\n", "mapping"),
    ("name: g\nmodels: [phi4\n", "not valid YAML"),
    ("a: &x [1]\nb: *x\n", "aliases"),
    ("include: nowhere.yaml\nname: g\n", "which is not there"),
    ("include: ''\nname: g\n", "which is a directory"),  # found by the fuzz test: the grid's own folder
]


@pytest.mark.parametrize(("text", "needle"), BAD_GRIDS)
def test_bad_grid_files_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ArbError, match=needle):
        load_grid(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: g\nmodels: [gpt-17]\ntasks: [math]\n", "unknown model 'gpt-17'.*llama3.2"),
        ("name: g\nmodels: [phi4]\ntasks: [poetry]\n", "unknown task 'poetry'.*math"),
        ("name: g\nmodels: [phi4]\ntasks: [math]\noptimizer: adam\n", "unknown optimizer 'adam'.*mipro"),
        (
            "name: g\nmodels: [phi4]\ntasks: [math]\noptimizer_params: {auto: light, num_trials: 3}\n",
            "conflicts",
        ),
        (
            "name: g\nmodels: [phi4]\ntasks: [math]\noptimizer: none\noptimizer_params: {auto: light}\n",
            "does not take",
        ),
    ],
)
def test_unknown_names_list_the_choices(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ArbError, match=needle):
        expand(load_grid(_write(tmp_path, text)), REGISTRY)


def test_missing_grid_file_lists_shipped_grids() -> None:
    with pytest.raises(ArbError, match="smoke"):
        load_grid("no-such-grid")


PHASE_COUNTS = {"phase1": 54, "phase2": 0, "phase3": 8, "phase4": 18, "phase5": 24, "phase1-optimizers": 108}


@pytest.mark.parametrize(("grid", "count"), sorted(PHASE_COUNTS.items()))
def test_shipped_phase_files_expand_to_the_study_counts(grid: str, count: int) -> None:
    spec = load_grid(grid)
    trials = expand(spec, REGISTRY)
    assert len(trials) == count == spec.size * (spec.analysis_of is None)
    assert spec.phase == grid.removeprefix("phase").removesuffix("-optimizers")
    if trials:
        assert len({t.key for t in trials}) == count
        assert {t.task for t in trials} <= set(load_grid("phase1").tasks)


def test_phase_files_mirror_the_spec_table() -> None:
    p1, p3, p4, p5 = (load_grid(f"phase{i}") for i in (1, 3, 4, 5))
    assert p1.models == ["llama3.2", "mistral", "phi4", "qwen2.5:7b", "gpt-4o", "gpt-5.2"] and len(p1.tasks) == 9
    assert (p1.optimizer, p1.teacher, p1.n_eval) == (["mipro"], "gpt-4o", 50)
    assert p3.optimizer == ["demo_ablation"] and p3.optimizer_params["source"]["grid"] == "phase1"
    assert p4.models == ["qwen3:4b", "deepseek-r1:7b"] and p4.optimizer == ["none"]
    assert all(REGISTRY.get(m).reasoning for m in p4.models)
    assert (p5.optimizer, p5.teacher, p5.tasks) == (["bootstrap_rs"], "gpt-4o", ["math", "classification", "qa"])
    assert p5.n_labeled[:5] == [0, 1, 2, 4, 8]


def test_smoke_stages_cover_every_optimizer() -> None:
    chain = stages(load_grid("smoke"))
    assert [s.name for s in chain] == ["smoke", "smoke-tasks", "smoke-lowdata", "smoke-fewshot", "smoke-ablation"]
    assert {o for s in chain for o in s.optimizer} == {"mipro", "none", "bootstrap_rs", "bootstrap", "demo_ablation"}
    lowdata = next(s for s in chain if s.optimizer == ["bootstrap_rs"])
    assert len(lowdata.n_labeled) == 2
    assert {m for s in chain for m in s.models} == {"qwen-coder-1.5b"}
    assert {t.structured for s in chain for t in expand(s, REGISTRY)} == {False, True}
    assert len({t for s in chain for t in s.tasks}) > 1


def test_then_chain_errors(tmp_path: Path) -> None:
    _write(tmp_path, "name: a\nmodels: [phi4]\ntasks: [math]\nthen: [b.yaml]\n", "a.yaml")
    _write(tmp_path, "name: b\nmodels: [phi4]\ntasks: [math]\nthen: [a.yaml]\n", "b.yaml")
    with pytest.raises(ArbError, match="runs itself again"):
        stages(load_grid(tmp_path / "a.yaml"))
    bad = _write(tmp_path, "name: c\nmodels: [phi4]\ntasks: [math]\nthen: [nowhere]\n", "c.yaml")
    with pytest.raises(ArbError, match="neither a file nor a shipped grid"):
        load_grid(bad)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: g\nanalysis_of: phase1\nmodels: [phi4]\n", "runs no trials"),
        ("name: g\ntasks: [math]\n", "`models` must list at least one value"),
        ("name: g\nmodels: [phi4]\n", "`tasks` must list at least one value"),
        ("name: g\nmodels: [phi4]\ntasks: [code]\nsandbox: none\n", "sandbox"),
    ],
)
def test_analysis_grids_and_empty_axes(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ArbError, match=needle):
        load_grid(_write(tmp_path, text))


def test_an_optimizer_list_is_an_axis_and_one_name_keeps_its_keys(tmp_path: Path) -> None:
    one = expand(load_grid(_write(tmp_path, "name: g\nmodels: [phi4]\ntasks: [math]\nn_labeled: [40]\n")), REGISTRY)
    text = (
        "name: g\nmodels: [phi4]\ntasks: [math, qa]\noptimizer: [mipro, gepa, simba]\nn_labeled: [40]\n"
        "optimizer_params:\n  mipro: {auto: medium}\n  simba: {bsize: 8}\n"
    )
    spec = load_grid(_write(tmp_path, text, "three.yaml"))
    trials = expand(spec, REGISTRY)
    assert len(trials) == spec.size == 2 * 3
    assert [t.optimizer for t in trials[:3]] == ["mipro", "gepa", "simba"]  # three trials per point, side by side
    params = {t.optimizer: t.optimizer_params for t in trials}
    # with the defaults each optimizer uses filled in: the settings the work ran with, recorded and keyed
    assert params["mipro"] == {"auto": "medium"} and params["simba"] == {
        "bsize": 8,
        "num_candidates": 6,
        "max_steps": 8,
    }
    assert params["gepa"]["auto"] == "light" and params["gepa"]["candidate_selection_strategy"] == "pareto"
    assert len({t.key for t in trials}) == 6
    # the point's MIPROv2 trial is the point a one-optimizer grid makes; at auto: medium, not its work
    assert one[0].point_key == trials[0].point_key and one[0].key != trials[0].key
    assert (
        one[0].key
        == expand(
            load_grid(
                _write(
                    tmp_path,
                    "name: g\nmodels: [phi4]\ntasks: [math]\nn_labeled: [40]\noptimizer: [mipro, gepa]\n",
                    "two.yaml",
                )
            ),
            REGISTRY,
        )[0].key
    )


def test_every_shipped_grid_keeps_its_points() -> None:
    """The optimizer axis changed how grids are read, not what their trials are: a key pinned before it, now the
    trial's point (runs recorded under it are adopted when their settings match: tests/grid/test_reuse.py)."""
    smoke = expand(load_grid("smoke"), REGISTRY)[0]
    assert smoke.point_key == trial_key(
        model="qwen-coder-1.5b", task="extraction", task_version=smoke.task_version, optimizer="mipro",
        teacher=None, demos=2, n_labeled=6, seed=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ("optimizer: gepa\noptimizer_params: {auto: light, max_metric_calls: 100}", "exactly one"),
        ("optimizer: gepa\noptimizer_params: {auto: huge}", "not a budget"),
        ("optimizer: gepa\nn_val: 10\noptimizer_params: {max_metric_calls: 40}", "below the 49 .*at least 49"),
        ("optimizer: gepa\nn_val: 10\nn_labeled: [5]\noptimizer_params: {max_full_evals: 2}", "budget of 30"),
        ("optimizer: gepa\nn_labeled: [0]", "n_labeled 0"),
        ("optimizer: gepa\noptimizer_params: {use_merge: maybe}", "use_merge"),
        ("optimizer: gepa\noptimizer_params: {max_metric_calls: -5}", "positive whole number"),
        ("optimizer: gepa\noptimizer_params: {num_trials: 5}", "does not take num_trials"),
        ("optimizer: simba\nn_labeled: [10]", "bsize 32.*larger than n_labeled 10"),
        ("optimizer: simba\nn_labeled: [10]\noptimizer_params: {bsize: 4, max_demos: 3}", "does not take max_demos"),
        ("optimizer: [mipro, gepa]\noptimizer_params: {auto: light}", "maps each of mipro, gepa"),
        ("optimizer: [mipro, mipro]", "duplicates"),
    ],
)
def test_bad_gepa_and_simba_settings_are_one_line_errors(tmp_path: Path, params: str, needle: str) -> None:
    sizes = "" if "n_labeled" in params else "n_labeled: [50]\n"
    path = _write(tmp_path, f"name: g\nmodels: [phi4]\ntasks: [math]\n{sizes}{params}\n")
    with pytest.raises(ArbError, match=needle) as err:
        expand(load_grid(path), REGISTRY)
    assert "\n" not in str(err.value)


def test_gepa_budget_at_the_floor_passes(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: g\nmodels: [phi4]\ntasks: [math]\nn_val: 10\noptimizer: gepa\n"
                            "optimizer_params: {max_metric_calls: 49}\n")  # fmt: skip
    assert len(expand(load_grid(path), REGISTRY)) == 1


def test_the_comparison_grid_runs_three_optimizers_on_one_point() -> None:
    trials = expand(load_grid("optimizers"), REGISTRY)
    assert [t.optimizer for t in trials] == ["mipro", "gepa", "simba"]
    assert len({(t.model, t.task, t.demos, t.n_labeled, t.seed) for t in trials}) == 1
