"""Problems the user can act on. Each message names the thing and says what to do."""

from __future__ import annotations

from pathlib import Path


class OmnideskError(Exception):
    """An expected failure with a one-line message fit to show the user as is."""


class ModelFileError(OmnideskError):
    """A model file or bundle that is missing, damaged or of the wrong kind."""

    def __init__(self, path: Path | str, problem: str, advice: str) -> None:
        self.path = Path(path)
        self.problem = problem
        self.advice = advice
        super().__init__(f"{self.path}: {problem}. {advice}")


class ComputeError(OmnideskError):
    """A computation failed in a way a damaged model file can explain (llama.cpp refused a batch)."""
