"""The one error type for a user's mistake in a training run: a list of problems, one line each."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["LoaderFault", "RunConfigError"]


class RunConfigError(Exception):
    """Something a run needs is missing or wrong; ``train.py`` prints each problem and exits 2.

    Attributes:
        problems: One line per problem, each saying what is wrong and how to fix it.
    """

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class LoaderFault(RuntimeError):
    """The loader failed mid-run (a dead worker, a bad image): the library's error, and how
    to resume from the last checkpoint."""

    def __init__(self, error: Exception, folder: str, checkpoint_every: int):
        self.error = error
        hint = (
            f"resume from the last checkpoint with: python train.py hydra.run.dir={folder} "
            "trainer.resume=auto (and the same overrides)"
            if checkpoint_every
            else "no checkpoints were written (trainer.checkpoint_every=0)"
        )
        super().__init__(f"{type(error).__name__}: {error}; {hint}")
