"""What a compression flow writes and measures, shared by `compress` and `compress_to_target`.

Every path is checked, and every input file of the report read, before any work: a wrong path or
a bad benchmark JSON fails at once, not after an hour of retraining. The written file is then read
and decoded once, for its sizes, its energy, the model scored after compression and the report.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from netshrink import zoo
from netshrink.api.compressed import CompressedModel
from netshrink.api.files import open_file
from netshrink.api.models import Source
from netshrink.budget.curves import SensitivityResult
from netshrink.errors import NetshrinkError
from netshrink.evaluate import EvalResult, evaluate
from netshrink.parallel.runtime import is_main
from netshrink.paths import check_output_path

if TYPE_CHECKING:  # the report (matplotlib) is imported only when asked for
    from netshrink.report.html import ReportExtras


@dataclass
class CompressOutputs:
    """The .nsk file to write (None: keep the model in memory), whether to score the model before and
    after on its held-out split, and the HTML report with what it plots besides the file."""

    output: str | Path | None
    evaluate: bool
    data_dir: str | None
    html: str | Path | None = None
    extras: ReportExtras | None = None
    device: torch.device | None = None

    @classmethod
    def check(
        cls,
        output: str | Path | None,
        *,
        evaluate: bool,
        data_dir: str | None,
        report: str | Path | None = None,
        runs: Sequence[str | Path] = (),
        sensitivity: str | Path | None = None,
        device: torch.device | None = None,
    ) -> CompressOutputs:
        """Check every path and read the report's inputs (`runs`, `sensitivity` curves) up front."""
        if output is not None:
            check_output_path(output, "output file")
        if report:
            check_output_path(report, "HTML report")
            if output is None:
                raise NetshrinkError("an HTML report describes a file: give output= as well")
        elif runs:
            raise NetshrinkError("--runs is plotted in the HTML report: add --report FILE.html")
        extras = None
        if report:
            from netshrink.report.html import read_extras

            extras = read_extras([str(run) for run in runs], str(sensitivity) if sensitivity else None)
        return cls(output, evaluate, data_dir, report, extras, device)

    def plot(self, sensitivity: SensitivityResult) -> None:
        """Plot these curves in the report (the ones a target was chosen from)."""
        if self.extras is not None:
            from netshrink.report.inputs import sensitivity_curves

            self.extras.sensitivity = sensitivity_curves(sensitivity)

    def score(self, source: Source) -> EvalResult | None:
        """The uncompressed model's held-out score, when asked for (by rank 0 alone in a distributed
        run: the others go on to the recipe and wait for it at its first collective operation)."""
        return self.score_of(source.module, source) if self.evaluate and is_main() else None

    def score_of(self, module: object, source: Source) -> EvalResult:
        return evaluate(module, source.require_dataset(), self.data_dir, device=self.device)

    def finish(self, compressed: CompressedModel, source: Source, before: EvalResult | None) -> CompressedModel:
        """Write the file and measure it (decoded once), or score the model in memory when there is no file.
        In a distributed run rank 0 alone does this: the other ranks never touch the output paths."""
        compressed.before = before
        if not is_main():
            return compressed
        if self.output is None:
            compressed.after = self.score_of(compressed.model, source) if self.evaluate else None
            return compressed
        compressed.write(self.output)
        zoo_model = compressed.identity.name in zoo.MODEL_NAMES  # rebuilt from the header, as a user would
        opened = open_file(self.output, None if zoo_model else copy.deepcopy(compressed.model), require_model=True)
        compressed.file = opened.report
        compressed.after = self.score_of(opened.model, source) if self.evaluate else None
        if self.html is not None:
            self._write_html(compressed)
        return compressed

    def _write_html(self, compressed: CompressedModel) -> None:
        from netshrink.report.html import write_html_report

        measured = compressed.to_json()
        evaluation = {key: measured[key] for key in ("metric", "dataset", "before", "after")}
        extras = replace(self.extras, evaluation=evaluation, energy=measured["energy"])
        write_html_report(compressed.file, self.html, extras)
        compressed.html = str(self.html)
