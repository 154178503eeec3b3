"""User-facing errors: each names the problem and the fix, and the CLI prints it as one line."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError


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


def one_line(exc: Exception) -> str:
    """An exception's message with its line breaks squeezed out, for one-line CLI errors."""
    return " ".join(str(exc).split())


def validation_summary(exc: ValidationError) -> str:
    """Pydantic's errors squeezed into one line: `field.path: message; ...`."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
