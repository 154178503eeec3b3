"""Hub datasets as the study meets them: pinned revisions, repositories laid out like the hub's, scripts refused,
schemas checked, and the preflight that says all of it before a trial starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import hub_mirror
from hub_stub import HubStub

from grid import preflight
from grid.spec import GridSpec, expand
from trainables.errors import ArbError
from trainables.registry import load_registry
from trainables.tasks import TASKS, classification, extraction, synthesis
from trainables.tasks.base import HubData

ALL_TASKS = sorted(TASKS)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every dataset of the study, 12 rows per split, laid out as its pinned revision is on the hub."""
    return hub_mirror.generate(tmp_path_factory.mktemp("hub"), rows=12)


def _grid(data: str, tasks: list[str] = ALL_TASKS) -> GridSpec:
    return GridSpec.model_validate(
        {
            "name": "g",
            "phase": "smoke",
            "models": ["smollm2"],
            "tasks": tasks,
            "optimizer": "none",
            "demos": [0],
            "n_labeled": [0],
            "n_val": 1,
            "n_eval": 4,
            "data": data,
        }
    )


def test_every_task_pins_a_full_commit_and_puts_it_in_its_version() -> None:
    for task in TASKS.values():
        assert task.data, task.name
        for data in task.data:
            assert len(data.revision) == 40 and int(data.revision, 16) >= 0, (task.name, data.revision)
            assert data.revision[:8] in task.version, task.name


def test_the_three_script_repositories_are_replaced() -> None:
    used = {d.hub_id for t in TASKS.values() for d in t.data}
    assert not used & {"PolyAI/banking77", "eriktks/conll2003"}
    assert classification.DATA.hub_id == "legacy-datasets/banking77"
    assert extraction.DATA.hub_id == "lhoestq/conll2003"
    assert synthesis.DATA.hub_id == "EdinburghNLP/xsum" and synthesis.DATA.revision.startswith("5484b35")


def test_all_nine_tasks_pass_the_preflight_on_hub_shaped_copies(mirror: Path) -> None:
    trials = expand(_grid(str(mirror)), load_registry())
    assert {t.task for t in trials} == set(ALL_TASKS)
    assert preflight.check_data(trials, None) == []


def test_tasks_load_from_the_copies_with_their_labels(mirror: Path) -> None:
    splits = TASKS["classification"].load(str(mirror), seed=0, n_labeled=4, n_val=2, n_eval=5)
    assert len(splits.test) == 5 and all(ex.label in classification.LABELS for ex in splits.test)
    ner = TASKS["extraction"].load(str(mirror), seed=0, n_labeled=2, n_val=2, n_eval=3)
    assert all(isinstance(ex.entities, list) for ex in ner.test)
    rag = TASKS["rag"].load(str(mirror), seed=0, n_labeled=2, n_val=2, n_eval=3)
    assert 0 < len(rag.corpus) < 12 + 10  # questions share paragraphs, as in SQuAD


def test_a_repository_with_a_loading_script_is_refused_with_the_fix(tmp_path: Path) -> None:
    hub_mirror.write_script_repo(tmp_path, "lhoestq/conll2003")
    trials = expand(_grid(str(tmp_path), ["extraction"]), load_registry())
    problems = preflight.check_data(trials, None)
    assert len(problems) == 1
    line = problems[0].line()
    assert "loading script" in line and "conll2003.py" in line and "parquet" in line
    assert "network" not in line
    with pytest.raises(ArbError, match="loading script"):
        TASKS["extraction"].load(str(tmp_path), seed=0, n_labeled=1, n_val=1, n_eval=1)


def test_other_label_names_are_refused(tmp_path: Path) -> None:
    renamed = (*classification.LABELS[1:], classification.LABELS[0])  # same names, another order
    hub_mirror.SCHEMAS["legacy-datasets/banking77"]["label"] = renamed
    try:
        hub_mirror.write_repo(tmp_path, "legacy-datasets/banking77", {"train": 5, "test": 5})
    finally:
        hub_mirror.SCHEMAS["legacy-datasets/banking77"]["label"] = classification.LABELS
    problems = preflight.check_data(expand(_grid(str(tmp_path), ["classification"]), load_registry()), None)
    assert len(problems) == 1 and "ClassLabel names" in problems[0].problem
    with pytest.raises(ArbError, match="ClassLabel names"):
        TASKS["classification"].load(str(tmp_path), seed=0, n_labeled=1, n_val=1, n_eval=1)


def test_a_missing_column_and_a_missing_split_are_named(tmp_path: Path) -> None:
    root = hub_mirror.write_repo(tmp_path, "google/boolq", {"train": 5})  # no validation split
    problems = preflight.check_data(expand(_grid(str(tmp_path), ["analysis"]), load_registry()), None)
    assert len(problems) == 1 and "no split validation" in problems[0].problem and "train" in problems[0].problem
    hub_mirror.write_repo(tmp_path, "google/boolq", {"train": 5, "validation": 5})
    meta = yaml.safe_load((root / "README.md").read_text().split("---")[1])
    meta["dataset_info"][0]["features"] = [f for f in meta["dataset_info"][0]["features"] if f["name"] != "passage"]
    (root / "README.md").write_text(f"---\n{yaml.safe_dump(meta)}---\n")
    problems = preflight.check_data(expand(_grid(str(tmp_path), ["analysis"]), load_registry()), None)
    assert len(problems) == 1 and "no column passage" in problems[0].problem


def test_jsonl_directories_are_checked_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    problems = preflight.check_data(expand(_grid(str(tmp_path), ["math"]), load_registry()), None)
    assert len(problems) == 1 and "test.jsonl does not exist" in problems[0].problem
    assert preflight.check_data(expand(_grid("sample"), load_registry()), None) == []


def test_a_passed_hub_revision_is_not_asked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def inspect(data: HubData, source: str, where: str) -> None:
        asked.append(where)

    monkeypatch.setattr(preflight, "inspect_repository", inspect)
    monkeypatch.setattr(preflight, "_human_eval", lambda: [])
    monkeypatch.setattr(preflight, "_hub_unreachable", lambda data: None)  # this machine has no hub: say it answers
    trials = expand(_grid("hub", ["math", "qa"]), load_registry())
    assert preflight.check_data(trials, tmp_path) == []
    assert sorted(asked) == ["hotpotqa/hotpot_qa", "openai/gsm8k"]
    assert preflight.check_data(trials, tmp_path) == []
    assert len(asked) == 2  # the cache file answered


def test_an_unreachable_hub_is_one_line_and_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens at the hub's address: one problem for every hub dataset, asked once (not once per dataset
    with `datasets`' retries, ~25 s each), naming the way out (copies of the pinned revisions, or the samples)."""
    import socket

    import huggingface_hub.constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    problems = preflight.check_data(expand(_grid("hub", ["math", "qa", "rag"]), load_registry()), tmp_path)
    assert len(problems) == 1  # not one per dataset, each after `datasets`' own retries
    assert "cannot be reached" in problems[0].problem and "3 dataset(s)" in problems[0].problem
    assert "hf download" in problems[0].fix and "data: sample" in problems[0].fix


def _arb_check(grid: Path, hub_url: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_HOME": str(home / "hf"), "ARB_HOME": str(home)}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-m", "grid.cli", "check", str(grid)], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def test_data_hub_runs_the_hub_code_path_against_a_local_hub(mirror: Path, tmp_path: Path) -> None:
    """`data: hub` with all nine tasks, the hub being a stand-in on 127.0.0.1 that serves the hub-shaped copies at
    their pinned commits (tests/hub_stub.py): the preflight passes through `datasets`' and `huggingface_hub`'s own
    resolution and listing; a second check asks the hub nothing (the passed commits are cached); a repository
    that holds a script at its pinned commit, or a commit the hub does not have, is one line each."""
    revisions = {d.hub_id: d.revision for t in TASKS.values() for d in t.data}
    grid = tmp_path / "hub.yaml"
    grid.write_text("name: hubgrid\nmodels: [smollm2]\ntasks: [" + ", ".join(ALL_TASKS) + "]\noptimizer: none\n"
                    "demos: [0]\nn_labeled: [0]\nn_val: 1\ndata: hub\n")  # fmt: skip
    with HubStub(mirror, revisions) as hub:
        ok = _arb_check(grid, hub.url, tmp_path / "home")
        assert ok.returncode == 0, ok.stderr
        asked = {m[1] for r in hub.requests if (m := re.search(r"/datasets/([^/]+/[^/]+)/", r))}
        assert asked == set(revisions)  # every task's repository was asked, at its pinned commit
        assert all(rev in " ".join(hub.requests) for rev in revisions.values())
        hub.requests.clear()
        assert _arb_check(grid, hub.url, tmp_path / "home").returncode == 0
        assert [r for r in hub.requests if "/datasets/" in r] == []

    broken = tmp_path / "broken"
    hub_mirror.write_script_repo(broken, "lhoestq/conll2003")
    hub_mirror.write_repo(broken, "google/boolq", {"train": 3, "validation": 3})
    grid.write_text(grid.read_text().replace(", ".join(ALL_TASKS), "extraction, analysis"))
    wrong = {**revisions, "google/boolq": "0" * 40}  # the hub does not have the commit the task pins
    with HubStub(broken, wrong) as hub:
        bad = _arb_check(grid, hub.url, tmp_path / "home2")
    assert bad.returncode == 2
    lines = [line for line in bad.stderr.splitlines() if line.strip().startswith("✘")]
    assert len(lines) == 2, bad.stderr
    assert "extraction:" in lines[0] and "loading script" in lines[0] and "conll2003.py" in lines[0]
    assert "analysis:" in lines[1] and "revision" in lines[1] and "35b264d03638" in lines[1]
