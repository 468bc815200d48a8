"""A compressed model: the module, the codec of every tensor, and what the file will record about it.

`apply_recipe` is the one place a recipe's steps run; both flows (`compress` with a recipe,
`compress_to_target` with a recipe generated from a target) build a `CompressedModel` with it. Once
written (`output=`), the same object holds what was measured on the file: its sizes read back from
disk, its estimated energy, and the held-out score before and after.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from netshrink.errors import DATA_HINT, NetshrinkError
from netshrink.evaluate import EvalResult
from netshrink.format.container import NskFile, serialize, write_nsk
from netshrink.identity import ModelIdentity
from netshrink.plan import CompressionPlan
from netshrink.report.sizes import WEIGHTS_RATIO_LABEL, FileReport, file_report, original_size
from netshrink.step import Recipe, StepContext

if TYPE_CHECKING:  # a budget is attached by compress_to_target; steps (and so this module) never need it
    from netshrink.budget.allocation import Budget

log = logging.getLogger(__name__)


@dataclass
class CompressedModel:
    """A model whose tensors have codecs assigned; `model` holds exactly what the file will load.

    `budget` is set by `compress_to_target`; `file`, `before`, `after` and `html` once the model was
    written and measured by a flow given `output=`.
    """

    model: nn.Module
    plan: CompressionPlan
    recipe: Recipe | None
    identity: ModelIdentity = ModelIdentity()
    budget: Budget | None = None
    seconds: float = 0.0  # spent compressing
    file: FileReport | None = None
    before: EvalResult | None = None
    after: EvalResult | None = None
    html: str | None = None

    def nsk(self) -> NskFile:
        """The file's contents, encoded in memory."""
        recipe = self.recipe.to_dict() if self.recipe else None
        return NskFile(self.plan.encode_all(self.model), self.identity.to_json(), recipe)

    def nbytes(self) -> int:
        """The exact size `save` will write, computed in memory."""
        return len(serialize(self.nsk()))

    def write(self, path: str | Path) -> None:
        """Write the .nsk file (atomically), reading nothing back."""
        write_nsk(path, self.nsk())

    def save(self, path: str | Path) -> FileReport:
        """Write the .nsk file; its sizes, read back from disk. Coded tensors changed since
        `compress` (say, by the user's own training loop) are first coded again with their
        codebooks, and the model takes those values: the file and `model` stay the same network."""
        self.write(path)
        return file_report(path)

    def to_json(self) -> dict[str, Any]:
        """Sizes (once written), recipe, scores and, for a target, the per-layer choice."""
        score = self.after or self.before
        out = {
            **_file_json(self.file),
            "recipe": self.recipe.name if self.recipe else None,
            "dataset": self.identity.dataset,
            "metric": score.metric if score else None,
            "before": self.before.value if self.before else None,
            "after": self.after.value if self.after else None,
            "compress_seconds": self.seconds,
        }
        if self.file is not None:
            out.update({k: v for k, v in self.file.to_json().items() if k in ("tensors", "energy")})
        if self.budget is not None:
            out["budget"] = self.budget.to_json()
        if self.html is not None:
            out["report"] = self.html
        return out

    def to_text(self) -> str:
        """For people: the chosen budget, the weights' table, energy, the score change, the report."""
        lines = [f"{self.budget.to_text()}\n"] if self.budget is not None else []
        if self.file is not None:
            lines.append(
                self.file.table(only_weights=True) + (f"\n{self.file.energy.text()}" if self.file.energy else "")
            )
        if self.before and self.after:
            lines.append(
                f"{self.identity.dataset} held-out {self.before.metric}: before "
                f"{self.before.show(self.before.value)}, after {self.after.show(self.after.value)} "
                f"(change {self.after.show_change(self.before.value)}) on {self.after.n} {self.after.unit}; "
                f"compression took {self.seconds:.1f} s"
            )
        if self.budget is not None and self.budget.energy_ratio is not None:
            lines.append(f"estimated energy ratio {self.budget.energy_ratio:.2f}x")
        if self.html is not None:
            lines.append(f"HTML report: {self.html}")
        return "\n".join(lines)


def _file_json(report: FileReport | None) -> dict[str, Any]:
    if report is None:
        return {}
    return {
        "file": report.file,
        "file_bytes": report.file_bytes,
        "original_bytes": report.original_bytes,
        "ratio": report.ratio,
        "weights_ratio": report.weights_ratio,
        "weights_ratio_label": WEIGHTS_RATIO_LABEL,
    }


def apply_recipe(
    model: nn.Module,
    recipe: Recipe,
    data: Any = None,
    *,
    identity: ModelIdentity | None = None,
    name: str | None = None,
    dataset: str | None = None,
    seed: int = 0,
    progress: bool = True,
    inplace: bool = False,
    device: torch.device | None = None,
) -> CompressedModel:
    """Apply a recipe's steps in order. The input model is left untouched unless `inplace`; `device`:
    where the steps compute (the compressed model stays there; None: where the model is).

    `data` is the training split for recipes that retrain or calibrate (never the evaluation
    split); `dataset` names it, which picks its default augmentation. Without `identity`, the file
    records the compressed model's class and zoo arguments under `name`.
    """
    if recipe.needs_data and data is None:
        raise NetshrinkError(f"recipe {recipe.name} needs training data {DATA_HINT}")
    model = model if inplace else copy.deepcopy(model)
    if device is not None:
        model.to(device)  # before the teacher is frozen: steps and teacher compute on one device
    original = original_size(model)
    torch.manual_seed(seed)
    plan, ctx = CompressionPlan(), StepContext(data=data, seed=seed, progress=progress, dataset=dataset)
    if recipe.distills:
        ctx.teacher_for(model)  # frozen before any step changes the model
    for index, step in enumerate(recipe.steps, 1):
        log.info("recipe %s step %d/%d: %s", recipe.name, index, len(recipe.steps), step.step_name)
        step.apply(model, plan, ctx)
        plan.refresh(model)  # tensors a step retrained after an earlier one coded them: coded again
    ident = (identity or ModelIdentity.of(model, name, dataset)).with_arch(ctx.arch)
    if ident.original is None:  # a re-compressed file keeps the first original
        ident = replace(ident, original=original)
    return CompressedModel(model, plan, recipe, ident)
