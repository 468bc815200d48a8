"""Results of the flows that are not a compressed model, a file report or a score: each prints
itself for people (`to_text`) and for scripts (`to_json`)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from netshrink import metrics
from netshrink.evaluate import EvalResult
from netshrink.training.loop import TrainConfig

RECIPES_LINE_WIDTH = 120


@dataclass
class TrainedCheckpoint:
    """A zoo model trained and saved as a checkpoint (every tensor stored exactly), and its score."""

    file: str
    model: str
    dataset: str
    score: EvalResult | None  # None on the ranks other than 0 of a distributed run (rank 0 scores)
    seconds: float
    config: TrainConfig

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "model": self.model,
            "dataset": self.dataset,
            "metric": self.score.metric,
            "value": self.score.value,
            "error": 1 - self.score.value if self.score.metric == metrics.ACCURACY else None,
            "train_seconds": self.seconds,
            "config": asdict(self.config),
        }

    def to_text(self) -> str:
        score = self.score
        error = f" (error {1 - score.value:.2%})" if score.metric == metrics.ACCURACY else ""
        return (
            f"trained {self.model} on {self.dataset} in {self.seconds:.0f} s: {score.metric} {score.show(score.value)}"
            f"{error} on {score.n} held-out {score.unit} -> {self.file}"
        )


@dataclass
class ReportWritten:
    """An HTML report written about a file: what it plots besides the file."""

    file: str
    report: str
    runs: int
    sensitivity: str | None
    energy: bool
    summary: str  # the file's one-line size summary

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "report": self.report,
            "runs": self.runs,
            "sensitivity": self.sensitivity,
            "energy": self.energy,
        }

    def to_text(self) -> str:
        return f"wrote {self.report}: {self.summary}"


@dataclass
class RecipeList:
    """The packaged recipes and their descriptions (whitespace folded)."""

    descriptions: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"recipes": list(self.descriptions), "descriptions": self.descriptions}

    def to_text(self) -> str:
        """One short line per recipe (the JSON holds the full descriptions)."""
        width = max(map(len, self.descriptions))
        limit = RECIPES_LINE_WIDTH - width - 2
        return "\n".join(f"{name:<{width}}  {first_sentence(text, limit)}" for name, text in self.descriptions.items())


def first_sentence(text: str, limit: int) -> str:
    """The text up to its first full stop, cut at a word to at most `limit` characters.

    A full stop ends a sentence only before a capital letter, a bracket or the end ("Han et al. 2016"
    does not).
    """
    match = re.search(r"\.(?=\s+[A-Z(]|$)", text)
    sentence = text[: match.end()] if match else text
    if len(sentence) <= limit:
        return sentence
    cut = sentence[: limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:(.")
    return f"{cut}..."
