"""User-facing errors: each names the problem and the fix, and the CLI prints it as one line."""

from __future__ import annotations

from collections.abc import Iterable


class ArbError(Exception):
    """An error caused by input or environment that the user can fix; never shown as a traceback."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem} (fix: {fix})")


def unknown_name(kind: str, name: object, valid: Iterable[str]) -> ArbError:
    """The error for a name missing from a registry, listing what would have been accepted."""
    choices = ", ".join(sorted(valid))
    return ArbError(f"unknown {kind} {name!r}", f"use one of: {choices}")
