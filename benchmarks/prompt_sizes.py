"""How long the study's prompts are, per task, with k few-shot demos, against the context windows that serve them.

Each task's unoptimized program is given k labeled demos (its first k training examples, as BootstrapFewShot's
labeled demos or MIPROv2's chosen ones would render) and DSPy's ChatAdapter formats the prompt of every test
example, exactly the messages a trial sends (rag's with the passages its retriever finds). Labeled demos carry no
reasoning: a bootstrapped demo of a chain-of-thought task (math, qa, rag) adds its reasoning, typically 50-200
tokens each, and agentic's later ReAct steps add their trajectory, so these are lower bounds for those tasks.
Tokens are counted with an embedded model's own tokenizer (llama-server's `/tokenize` on that model's GGUF,
served as a trial's would be), plus its chat template's tokens per message. The table gives the
median and the largest prompt per task and k, and how many prompts exceed 2048 / 4096 (Ollama's defaults) and
8192 (the registry's `context` for the study's Ollama models).

    python benchmarks/prompt_sizes.py --data sample --k 0 5 --record
    python benchmarks/prompt_sizes.py --data /tmp/full --k 0 5 --record    # hub_mirror.py's full-size data
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import dspy  # noqa: E402
import record  # noqa: E402

from trainables.registry import load_registry  # noqa: E402
from trainables.tasks import TASKS  # noqa: E402

TEMPLATE_TOKENS = 5
"""Chat-template tokens per message (Qwen2.5's `<|im_start|>role\\n ... <|im_end|>\\n`)."""
WINDOWS = (2048, 4096, 8192)


def prompts(task_name: str, data: str, k: int, n: int) -> list[list[dict[str, str]]]:
    """The messages of the first `n` test prompts of a task's program with `k` labeled demos."""
    task = TASKS[task_name]
    splits = task.load(data, seed=0, n_labeled=max(k, 1), n_val=1, n_eval=n)
    program = task.program(splits)
    adapter = dspy.ChatAdapter()
    out = []
    retrieve = getattr(program, "index", None)  # rag: the passages its retriever hands the answer step

    def with_passages(example: dspy.Example) -> dspy.Example:
        if retrieve is None:
            return example
        return example.copy(passages=retrieve.search(example.question, k=3))

    for predictor in program.predictors():
        demos = [with_passages(ex) for ex in splits.train[:k]]
        signature = predictor.signature
        for example in map(with_passages, splits.test):
            inputs = {name: example.get(name) for name in signature.input_fields}
            inputs = {key: ("" if value is None else value) for key, value in inputs.items()}
            out.append(adapter.format(signature, demos, inputs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample")
    parser.add_argument("--k", type=int, nargs="+", default=[0, 5])
    parser.add_argument("--n", type=int, default=20, help="test prompts per task")
    parser.add_argument("--model", default="qwen-coder-1.5b", help="embedded model whose tokenizer counts")
    parser.add_argument("--tasks", nargs="+", default=sorted(TASKS))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    import tempfile

    import httpx

    from grid.embedded import serve_embedded

    with tempfile.TemporaryDirectory() as logs, serve_embedded([args.model], load_registry(), Path(logs)) as served:
        root = served.endpoints[args.model].removesuffix("/v1")

        def count(messages: list[dict[str, str]]) -> int:
            def tokens(text: str) -> int:
                answer = httpx.post(f"{root}/tokenize", json={"content": text, "add_special": False}, timeout=60)
                return len(answer.raise_for_status().json()["tokens"])

            return sum(tokens(m["content"]) + TEMPLATE_TOKENS for m in messages)

        lines = table(args, count)
    print("\n".join(lines))
    if args.record:
        head = record.heading()
        record.append(
            "Prompt sizes against context windows (benchmarks/prompt_sizes.py)",
            [
                *head,
                f"Data: {args.data}; tokenizer: {args.model} (GGUF vocabulary); {args.n} test prompts per task.",
                "",
                *lines,
            ],
        )


def table(args: argparse.Namespace, count: Callable[[list[dict[str, str]]], int]) -> list[str]:
    """The Markdown table: per task and k, the prompts' median and largest size and how many exceed each window."""
    lines = [
        f"| task | k demos | prompts | median tokens | largest | > {' | > '.join(map(str, WINDOWS))} |",
        "|---|---|---|---|---|" + "---|" * len(WINDOWS),
    ]
    for task in args.tasks:
        for k in args.k:
            sizes = [count(m) for m in prompts(task, args.data, k, args.n)]
            over = [sum(s > w for s in sizes) for w in WINDOWS]
            lines.append(
                f"| {task} | {k} | {len(sizes)} | {statistics.median(sizes):.0f} | {max(sizes)} | "
                + " | ".join(map(str, over))
                + " |"
            )
    return lines


if __name__ == "__main__":
    main()
