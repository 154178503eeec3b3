"""Hub-shaped copies of the study's nine datasets, with generated text: for the preflight's tests and the
full-size data benchmark.

Each dataset is written as its pinned hub revision lays it out (`trainables/tasks/*.py`, `DATA.revision`): the
same repository path under DEST (`DEST/legacy-datasets/banking77/...`), the same parquet file names and configs,
the same features (ClassLabel names included) and a dataset card (`README.md`) where the real repository has
one; a grid with `data: DEST` then reads them through `datasets.load_dataset(DEST/<owner>/<name>)`, the code path
of a private mirror. The text is generated from a fixed vocabulary (never copied from the datasets), with each
dataset's typical lengths, so that sizes and memory are realistic: e.g. XSum documents of ~430 words, HotpotQA
rows of 10 paragraphs, SQuAD questions sharing paragraphs (~4.6 per paragraph, as in the real 87,599 / ~19k).

    python benchmarks/hub_mirror.py DEST --full          # the real row counts (about 1.3 GB, a few minutes)
    python benchmarks/hub_mirror.py DEST --rows 20       # 20 rows per split (tests)
    python benchmarks/hub_mirror.py DEST --script eriktks/conll2003   # a repository that still holds a script

Layouts the sources did not show in full are marked "assumed" below; the loader reads them either way, since
`datasets` infers splits from file names.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainables.tasks import classification, extraction  # noqa: E402

# Real split sizes (../shared/SPEC.md, the datasets' cards).
FULL_ROWS: dict[str, dict[str, int]] = {
    "legacy-datasets/banking77": {"train": 10003, "test": 3080},
    "openai/gsm8k": {"train": 7473, "test": 1319},
    "hotpotqa/hotpot_qa": {"train": 90447, "validation": 7405},
    "lhoestq/conll2003": {"train": 14041, "validation": 3250, "test": 3453},
    "google/boolq": {"train": 9427, "validation": 3270},
    "EdinburghNLP/xsum": {"train": 204045, "validation": 11332, "test": 11334},
    "ChilleD/StrategyQA": {"train": 1603, "test": 687},
    "rajpurkar/squad": {"train": 87599, "validation": 10570},
    "google-research-datasets/mbpp": {"train": 374, "test": 500, "validation": 90, "prompt": 10},
    "openai/openai_humaneval": {"test": 164},
}
QUESTIONS_PER_PARAGRAPH = 4.6
"""SQuAD: 87,599 training questions on ~19,000 distinct paragraphs."""

_VOCABULARY = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they you "
    "were her all she there would their we him been has when who will more no if out so said what up its about into "
    "than them can only other new some could time these two may then do first any my now such like our over man me "
    "even most made after also did many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men work long get here between "
    "both life being under never day same another know while last might us great old year off come since against go "
    "came right used take three river city council bank card transfer market season club government minister police "
    "school report company film music election court hospital village team"
)
_WORDS = _VOCABULARY.split()
_SURNAMES = "Alder Brook Corin Dalen Ember Fenwick Garrow Halden Isolde Jarrow Kestrel Lorne Marrow Norcott"
_NAMES = _SURNAMES.split()


class _Text:
    """Seeded words and sentences of typical lengths."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def words(self, n: int) -> str:
        return " ".join(self.rng.choices(_WORDS, k=max(1, n)))

    def around(self, mean: int) -> int:
        return max(1, int(self.rng.gauss(mean, mean / 3)))

    def sentence(self, mean: int = 18) -> str:
        return self.words(self.around(mean)).capitalize() + "."

    def paragraph(self, sentences: int, mean: int = 18) -> str:
        return " ".join(self.sentence(mean) for _ in range(sentences))

    def name(self) -> str:
        return f"{self.rng.choice(_NAMES)} {self.rng.choice(_NAMES)}"


def _features(spec: dict[str, Any]) -> Any:
    from datasets import ClassLabel, Features, List, Value

    def one(v: Any) -> Any:
        if isinstance(v, list):
            return List(one(v[0]))
        if isinstance(v, dict):
            return {k: one(x) for k, x in v.items()}
        if isinstance(v, tuple):
            return ClassLabel(names=list(v))
        return Value(v)

    return Features({k: one(v) for k, v in spec.items()})


_POS = tuple(f"POS{i}" for i in range(47))  # CoNLL's 47 POS tag names; the task reads only ner_tags
_CHUNK = tuple(f"CHUNK{i}" for i in range(23))

SCHEMAS: dict[str, dict[str, Any]] = {
    "legacy-datasets/banking77": {"text": "string", "label": classification.LABELS},
    "openai/gsm8k": {"question": "string", "answer": "string"},
    "hotpotqa/hotpot_qa": {
        "id": "string", "question": "string", "answer": "string", "type": "string", "level": "string",
        "supporting_facts": {"title": ["string"], "sent_id": ["int32"]},
        "context": {"title": ["string"], "sentences": [["string"]]},
    },
    "lhoestq/conll2003": {"id": "string", "tokens": ["string"], "pos_tags": [_POS], "chunk_tags": [_CHUNK],
                          "ner_tags": [extraction.NER_TAGS]},
    "google/boolq": {"question": "string", "answer": "bool", "passage": "string"},
    "EdinburghNLP/xsum": {"document": "string", "summary": "string", "id": "string"},
    "ChilleD/StrategyQA": {"qid": "string", "term": "string", "description": "string", "question": "string",
                           "answer": "bool", "facts": ["string"], "decomposition": ["string"]},
    "rajpurkar/squad": {"id": "string", "title": "string", "context": "string", "question": "string",
                        "answers": {"text": ["string"], "answer_start": ["int32"]}},
    "google-research-datasets/mbpp": {"task_id": "int32", "text": "string", "code": "string",
                                      "test_list": ["string"], "test_setup_code": "string",
                                      "challenge_test_list": ["string"]},
    "openai/openai_humaneval": {"task_id": "string", "prompt": "string", "canonical_solution": "string",
                                "test": "string", "entry_point": "string"},
}  # fmt: skip


def _banking(t: _Text, i: int, split: str) -> dict[str, Any]:
    return {"text": t.words(t.around(12)) + "?", "label": t.rng.randrange(77)}


def _gsm8k(t: _Text, i: int, split: str) -> dict[str, Any]:
    a, b = t.rng.randint(2, 90), t.rng.randint(2, 90)
    steps = " ".join(f"{t.sentence(10)} <<{a}+{b}={a + b}>>" for _ in range(3))
    return {
        "question": t.paragraph(3, 15) + f" How many are there if {a} join {b}?",
        "answer": f"{steps}\n#### {a + b}",
    }


def _hotpot(t: _Text, i: int, split: str) -> dict[str, Any]:
    titles = [t.name() for _ in range(10)]
    sentences = [[t.sentence(22) for _ in range(t.rng.randint(2, 6))] for _ in titles]
    gold = t.rng.sample(range(10), 2)
    return {
        "id": f"{split[:1]}{i:07x}",
        "question": t.sentence(16).rstrip(".") + "?",
        "answer": t.words(t.around(2)),
        "type": t.rng.choice(["bridge", "comparison"]),
        "level": t.rng.choice(["easy", "medium", "hard"]),
        "supporting_facts": {"title": [titles[g] for g in gold], "sent_id": [0, 1]},
        "context": {"title": titles, "sentences": sentences},
    }


def _conll(t: _Text, i: int, split: str) -> dict[str, Any]:
    n = t.around(14)
    tags = [t.rng.choice([0, 0, 0, 0, 1, 3, 5, 7]) for _ in range(n)]
    return {"id": str(i), "tokens": t.words(n).split(), "pos_tags": [t.rng.randrange(47) for _ in range(n)],
            "chunk_tags": [t.rng.randrange(23) for _ in range(n)], "ner_tags": tags}  # fmt: skip


def _boolq(t: _Text, i: int, split: str) -> dict[str, Any]:
    return {"question": t.words(t.around(9)), "answer": t.rng.random() < 0.62, "passage": t.paragraph(5, 20)}


def _xsum(t: _Text, i: int, split: str) -> dict[str, Any]:
    return {"document": "\n".join(t.paragraph(2, 22) for _ in range(t.around(10))), "summary": t.sentence(23),
            "id": str(30_000_000 + i)}  # fmt: skip


def _strategyqa(t: _Text, i: int, split: str) -> dict[str, Any]:
    return {"qid": f"{i:020x}", "term": t.name(), "description": t.sentence(12),
            "question": t.sentence(12).rstrip(".") + "?", "answer": t.rng.random() < 0.5,
            "facts": [t.sentence(14) for _ in range(t.rng.randint(2, 3))],
            "decomposition": [t.sentence(10).rstrip(".") + "?" for _ in range(3)]}  # fmt: skip


def _squad(t: _Text, i: int, split: str) -> dict[str, Any]:
    paragraph = int(i / QUESTIONS_PER_PARAGRAPH)
    context = _Text(hash((split, paragraph)) & 0xFFFF_FFFF).paragraph(6, 20)  # every question of it: same text
    start = t.rng.randrange(max(1, len(context) - 30))
    return {"id": f"{split[:1]}{i:023x}", "title": f"Title_{paragraph}", "context": context,
            "question": t.sentence(11).rstrip(".") + "?",
            "answers": {"text": [context[start : start + 12]], "answer_start": [start]}}  # fmt: skip


def _mbpp(t: _Text, i: int, split: str) -> dict[str, Any]:
    name = f"add_{i}"
    return {"task_id": i + 1, "text": f"Write a function that {t.words(t.around(12))}.",
            "code": f"def {name}(x):\n    return x + {i}",
            "test_list": [f"assert {name}({k}) == {k + i}" for k in range(3)],
            "test_setup_code": "", "challenge_test_list": []}  # fmt: skip


def _humaneval(t: _Text, i: int, split: str) -> dict[str, Any]:
    name = f"shift_{i}"
    return {"task_id": f"HumanEval/{i}", "prompt": f'def {name}(x: int) -> int:\n    """{t.sentence(14)}"""\n',
            "canonical_solution": f"    return x + {i}\n",
            "test": f"def check(candidate):\n    assert candidate(1) == {1 + i}\n", "entry_point": name}  # fmt: skip


ROWS: dict[str, Callable[[_Text, int, str], dict[str, Any]]] = {
    "legacy-datasets/banking77": _banking, "openai/gsm8k": _gsm8k, "hotpotqa/hotpot_qa": _hotpot,
    "lhoestq/conll2003": _conll, "google/boolq": _boolq, "EdinburghNLP/xsum": _xsum,
    "ChilleD/StrategyQA": _strategyqa, "rajpurkar/squad": _squad, "google-research-datasets/mbpp": _mbpp,
    "openai/openai_humaneval": _humaneval,
}  # fmt: skip


_CONFIGS = {"openai/gsm8k": "main", "hotpotqa/hotpot_qa": "distractor", "rajpurkar/squad": "plain_text",
            "google-research-datasets/mbpp": "full", "openai/openai_humaneval": "openai_humaneval"}  # fmt: skip


def _files(repo: str, split: str, rows: int) -> list[str]:
    """The parquet file(s) of one split, as the pinned revision names them."""
    if repo == "lhoestq/conll2003":  # parquet-converter's layout at 1bbb278
        return [f"lhoestq--conll2003/parquet-{split}.parquet"]
    if repo == "EdinburghNLP/xsum":  # parquet-converter's layout at 5484b35 (refs/convert/parquet)
        return [f"default/xsum-{split}.parquet"]
    folder = _CONFIGS.get(repo, "data")
    shards = 2 if rows > 50_000 else 1  # the hub splits big splits into shards of a few hundred MB
    return [f"{folder}/{split}-{k:05d}-of-{shards:05d}.parquet" for k in range(shards)]


_NO_CARD = {"lhoestq/conll2003", "EdinburghNLP/xsum"}
"""Repositories pinned at a parquet-converter commit: those hold the parquet files and no card."""


def _card(repo: str, splits: dict[str, int]) -> str:
    """A dataset card with the `configs` and `dataset_info` YAML that the hub's own cards carry."""
    features = _features(SCHEMAS[repo])
    config = _CONFIGS.get(repo, "default")
    info = {"config_name": config, "features": features._to_yaml_list(),
            "splits": [{"name": s, "num_bytes": 0, "num_examples": n} for s, n in splits.items()]}  # fmt: skip
    data_files = [{"split": s, "path": f"{_files(repo, s, n)[0].split('/')[0]}/{s}-*"} for s, n in splits.items()]
    meta = {"dataset_info": [info], "configs": [{"config_name": config, "data_files": data_files}]}
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n# {repo} (generated stand-in)\n"


def write_repo(dest: Path, repo: str, rows: dict[str, int], seed: int = 0) -> Path:
    """One repository under `dest/<owner>/<name>`, every split with `rows[split]` rows; returns its path."""
    from datasets import Dataset

    root = dest / repo
    make = ROWS[repo]
    features = _features(SCHEMAS[repo])
    for split, n in rows.items():
        files = _files(repo, split, n)
        per = -(-n // len(files))
        for k, name in enumerate(files):
            text = _Text(hash((seed, repo, split, k)) & 0xFFFF_FFFF)
            chunk = [make(text, i, split) for i in range(k * per, min(n, (k + 1) * per))]
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Dataset.from_list(chunk, features=features).to_parquet(str(path))
    if repo not in _NO_CARD:
        (root / "README.md").write_text(_card(repo, rows))
    return root


def write_script_repo(dest: Path, repo: str) -> Path:
    """A repository that still holds its loading script (as `eriktks/conll2003` does on the hub)."""
    root = dest / repo
    root.mkdir(parents=True, exist_ok=True)
    name = repo.split("/")[-1]
    (root / f"{name}.py").write_text("import datasets\n\n\nclass Builder(datasets.GeneratorBasedBuilder):\n    pass\n")
    (root / "README.md").write_text(f"# {repo}\n")
    return root


def generate(dest: Path, rows: int | None = None, repos: list[str] | None = None) -> Path:
    """Every dataset (or `repos`) under `dest`: `rows` rows per split, or the real counts when None."""
    for repo in repos or list(FULL_ROWS):
        counts = {s: (n if rows is None else min(rows, n)) for s, n in FULL_ROWS[repo].items()}
        write_repo(dest, repo, counts)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--full", action="store_true", help="the real row counts")
    size.add_argument("--rows", type=int, help="rows per split")
    size.add_argument("--script", metavar="REPO", help="write REPO as a repository holding a loading script")
    parser.add_argument("--repo", action="append", help="only this repository (repeatable)")
    args = parser.parse_args()
    if args.script:
        print(write_script_repo(args.dest, args.script))
        return
    print(generate(args.dest, None if args.full else args.rows, args.repo))


if __name__ == "__main__":
    main()
