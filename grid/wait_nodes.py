"""Wait until a Ray cluster has a number of live nodes: `python -m grid.wait_nodes ADDRESS COUNT [--timeout S]`.

deploy/slurm/arb.sbatch starts the sweep only once every node of the allocation has joined (a sweep that started
with fewer would plan its trials on the nodes it saw). One connection, polled; exit 1 with the count reached if the
deadline passes, so the job fails with a reason instead of running on part of its allocation."""

from __future__ import annotations

import argparse
import sys
import time

from trainables.errors import ArbError


def wait(address: str, count: int, timeout_s: float, poll_s: float = 1.0) -> int:
    """Live nodes once `count` have joined or the deadline passed."""
    from grid.session import connect_ray

    connect_ray(address)
    import ray

    deadline = time.monotonic() + timeout_s
    alive = 0
    try:
        while True:
            alive = sum(1 for node in ray.nodes() if node["Alive"])
            if alive >= count or time.monotonic() >= deadline:
                return alive
            time.sleep(poll_s)
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grid.wait_nodes", description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="the head's HOST:PORT")
    parser.add_argument("count", type=int, help="how many nodes must be alive")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        alive = wait(args.address, args.count, args.timeout)
    except ArbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.monotonic() - start
    if alive < args.count:
        print(f"error: {alive} of {args.count} Ray nodes joined {args.address} within {args.timeout:.0f} s; "
              "fix: see each node's log (the job's slurm/<job id>/ directory)", file=sys.stderr)  # fmt: skip
        return 1
    print(f"ray: {alive} node(s) joined {args.address} after {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
