"""The one error type for a user's mistake in a training run: a list of problems, one line each."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["RunConfigError"]


class RunConfigError(Exception):
    """Something a run needs is missing or wrong; ``train.py`` prints each problem and exits 2.

    Attributes:
        problems: One line per problem, each saying what is wrong and how to fix it.
    """

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
