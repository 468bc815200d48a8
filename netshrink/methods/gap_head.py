"""Head surgery: replace a flatten + fully connected head by global average pooling, then retrain.

The FC layer after a flatten holds most of a small CNN's weights (LeNet-5: 400 K of 431 K, all in
fc1) because it has one weight per input position. Pooling over positions first (Lin et al. 2014,
"Network in Network", sec. 3.2) drops that factor. How the head is rebuilt is the model's own
business: a model that can switch has the members of `zoo.GapHeadSwitch` (`to_gap_head()`, and
`arch_options()` recording the change, so the saved file reloads into the new module). A model already ending in global
average pooling + linear (ResNet-20: `head = "gap"`) has nothing to replace; the step says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from netshrink import zoo
from netshrink.errors import RecipeError
from netshrink.methods.filter_prune import record_arch, require_no_codecs
from netshrink.plan import CompressionPlan
from netshrink.step import StepContext, register_step
from netshrink.training.retraining import TrainingStep

log = logging.getLogger(__name__)


@register_step("gap_head")
@dataclass(frozen=True)
class GapHead(TrainingStep):
    """Switch the model to its global-average-pooling head and retrain for `epochs` (`train`:
    `RetrainSettings`, written flat in a recipe)."""

    step_name: ClassVar[str] = ""

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        name = type(model).__name__
        if isinstance(model, zoo.HasHead) and model.head == "gap":
            log.warning(
                "gap_head: %s already ends in global average pooling + linear; nothing to replace, step skipped", name
            )
            return
        if not isinstance(model, zoo.GapHeadSwitch):
            raise RecipeError(
                f"step gap_head: {name} has no global-average-pooling head option (to_gap_head); "
                f"zoo models with one: {', '.join(zoo.models_with(zoo.GapHeadSwitch))}"
            )
        require_no_codecs(plan, self.step_name)
        model.to_gap_head()
        record_arch(model, ctx, self.step_name)
        if self.train.epochs > 0:
            self.retrain(model, ctx, [], desc="gap_head retrain")
