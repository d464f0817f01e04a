"""User-input errors: every problem names its file, line and column and says how to fix it.

Anything a *target* does wrong becomes a finding with status `error`; only what a *user* wrote
(config, inventory, controls, waivers, command line) raises these. The CLI turns them into exit code 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with user input, with where it is and how to fix it."""

    file: Path | None
    line: int | None  # 1-based
    column: int | None  # 1-based
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = _display(self.file) if self.file is not None else "<input>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class InputError(Exception):
    """Raised when user input is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, message: str, *, file: Path | None = None, line: int | None = None, hint: str = "") -> InputError:
        return cls([Problem(file, line, None, message, hint)])


def _display(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)
