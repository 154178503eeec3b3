"""One real sequential trial on the embedded model, and its record (issue: decide with fewer calls).

Run: .venv/bin/python benchmarks/sequential_real.py [--n-eval 40] [--futility 0.1]
Appends the trial's record, with the machine, the date and this command, to BENCHMARKS.md.

The shipped sample files have 8 test sentences per task: too few for a stopping rule to show anything. This writes
a larger CoNLL-2003-shaped data directory (`tokens` and BIO `ner_tags` in the dataset's own label order), made of
sentences composed here from templates and made-up names, to `$ARB_HOME/data/sequential-demo`, and a grid that
runs the smoke's few-shot point on it (embedded Qwen2.5-Coder-1.5B, extraction, BootstrapFewShot with 2 demos)
with `stopping: sequential`. Then it runs the grid with `arb run` and prints what the trial recorded: examples
evaluated per condition, the reason it stopped, the sequence's interval and p-value, and the LM calls saved.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import record  # noqa: E402

from trainables.record.tracking import default_home, default_tracking_uri  # noqa: E402
from trainables.tasks.extraction import NER_TAGS  # noqa: E402

PEOPLE = [("Ingrid", "Halvorsen"), ("Tomas", "Reyes"), ("Amara", "Okafor"), ("Lukas", "Brenner"),
          ("Sofia", "Marchetti"), ("Kenji", "Mori"), ("Nadia", "Petrova"), ("Owen", "Gallagher"),
          ("Leila", "Haddad"), ("Pieter", "Visser")]  # fmt: skip
ORGS = [("Harbor", "Mutual"), ("Crestline", "Foods"), ("Vantor", "Systems"), ("Bluefield", "Rail"),
        ("Orchid", "Pharma"), ("Kestrel", "Bank")]  # fmt: skip
PLACES = [["Lisbon"], ["Tampere"], ["Cape", "Town"], ["Porto", "Alegre"], ["Ghent"], ["Kyoto"], ["Halifax"]]
MISC = [["Danish"], ["Olympic"], ["Brazilian"], ["Champions", "League"], ["Canadian"]]
TEMPLATES = [
    "{per} joined {org} in {loc} last year .",
    "{org} said {per} will lead its {misc} unit .",
    "{per} met {per2} in {loc} on Monday .",
    "Shares of {org} rose after the {misc} regulator approved the deal .",
    "{per} , a {misc} citizen , moved to {loc} .",
    "Police in {loc} questioned {per} about the {org} accounts .",
    "The {misc} team beat {org} in {loc} .",
    "{per} left {org} to work for {org2} .",
]


def _sentence(template: str, rng: np.random.Generator) -> tuple[list[str], list[int]]:
    tokens: list[str] = []
    tags: list[int] = []
    people = rng.choice(len(PEOPLE), size=2, replace=False)
    orgs = rng.choice(len(ORGS), size=2, replace=False)
    slots = {
        "{per}": (list(PEOPLE[people[0]]), "PER"), "{per2}": (list(PEOPLE[people[1]]), "PER"),
        "{org}": (list(ORGS[orgs[0]]), "ORG"), "{org2}": (list(ORGS[orgs[1]]), "ORG"),
        "{loc}": (PLACES[rng.integers(len(PLACES))], "LOC"), "{misc}": (MISC[rng.integers(len(MISC))], "MISC"),
    }  # fmt: skip
    for word in template.split():
        if word in slots:
            words, kind = slots[word]
            tokens += words
            tags += [NER_TAGS.index(f"B-{kind}")] + [NER_TAGS.index(f"I-{kind}")] * (len(words) - 1)
        else:
            tokens.append(word)
            tags.append(0)
    return tokens, tags


def write_data(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """CoNLL-2003-shaped `train.jsonl` / `test.jsonl` under `root/conll2003`."""
    rng = np.random.default_rng(seed)
    (root / "conll2003").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            tokens, tags = _sentence(TEMPLATES[i % len(TEMPLATES)], rng)
            rows.append({"id": str(i), "tokens": tokens, "pos_tags": [0] * len(tokens),
                         "chunk_tags": [0] * len(tokens), "ner_tags": tags})  # fmt: skip
        (root / "conll2003" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-eval", type=int, default=40)
    parser.add_argument("--futility", type=float, default=0.0, help="the grid's `futility` (0: off)")
    args = parser.parse_args()
    name = "sequential-demo" + (f"-futility-{args.futility:g}" if args.futility else "")
    home = default_home()
    data = write_data(home / "data" / "sequential-demo", n_train=12, n_test=args.n_eval)
    grid = home / "data" / f"{name}.yaml"
    grid.write_text(
        f"include: {ROOT / 'grid' / 'phases' / 'smoke' / 'base.yaml'}\n"
        f"name: {name}\ndescription: BootstrapFewShot on extraction, stopping when the difference is decided.\n"
        f"tasks: [extraction]\noptimizer: bootstrap\ndemos: [2]\nn_labeled: [4]\ndata: {data}\n"
        f"n_eval: {args.n_eval}\nstopping: sequential\nn_min: 10\ncheck_every: 5\nequivalence_pp: 10\n"
        f"futility: {args.futility}\n"
    )
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("arb")), "run", str(grid)], check=True)
    wall = time.perf_counter() - t0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(default_tracking_uri())
    exp = client.get_experiment_by_name(name)
    [run] = client.search_runs([exp.experiment_id], "tags.`arb.trial_key` != ''", max_results=1)
    m, tags = run.data.metrics, run.data.tags
    sequence = pd.read_csv(io.StringIO(Path(client.download_artifacts(run.info.run_id, "sequence.csv")).read_text()))
    lines = [
        *record.heading(),
        f"Trial `{run.info.run_name}` (run {run.info.run_id}, futility {args.futility:g}), `arb run` wall time "
        f"{wall:.0f} s (nothing else running); {int(m.get('cache_hits', 0))} of its LM calls were answered from the "
        "node's LM cache (an earlier run's answers to the same prompts).",
        "",
        f"- stopped after **{int(m['n_evaluated'])} of {args.n_eval}** examples per condition: "
        f"**{tags['arb.stop_reason']}**",
        f"- baseline {m['baseline_score']:.1f} → optimized {m['optimized_score']:.1f} ({m['delta_pp']:+.1f} pp, "
        "micro F1 on the examples evaluated)",
        f"- confidence sequence at the stop: [{m['seq_ci_low']:+.1f}, {m['seq_ci_high']:+.1f}] pp, "
        f"p = {m['seq_p_value']:.3g}",
        f"- LM calls: {int(m['lm_calls'])} ({int(m['eval_lm_calls'])} evaluating, {int(m['optimize_lm_calls'])} "
        f"optimizing); about {m['eval_calls_saved']:.0f} evaluation calls saved against n_eval {args.n_eval}",
        "",
        "The sequence at each look (`sequence.csv`):",
        "",
        sequence.to_markdown(index=False, floatfmt=".3g"),
    ]
    record.append("Sequential evaluation, one real trial (benchmarks/sequential_real.py)", lines)


if __name__ == "__main__":
    main()
