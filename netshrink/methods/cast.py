"""Store the remaining full-precision tensors in 16 bits (fp16 or bf16).

Acts on every floating tensor (weights, biases, norm parameters, buffers) of the selected modules
that no earlier step has given a codec, so `cast` after `palette` only shrinks what is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import nn

from netshrink.format.codecs import Dense
from netshrink.plan import EXACT, CompressionPlan
from netshrink.step import LayerStep, StepContext, register_step


@register_step("cast")
@dataclass(frozen=True)
class Cast(LayerStep):
    """Dense 16-bit storage of the floating tensors not yet assigned a codec. Per module: `dtype`,
    in `overrides` (a module's own tensors: its weight, bias, buffers)."""

    layer_types: ClassVar[tuple[type[nn.Module], ...]] = (nn.Module,)
    per_layer_fields: ClassVar[tuple[str, ...]] = ("dtype",)
    dtype: Literal["fp16", "bf16"] = "fp16"

    def apply(self, model: nn.Module, plan: CompressionPlan, ctx: StepContext) -> None:
        state = model.state_dict()
        for module_name, _ in self.layers(model):
            codec = Dense(self.for_layer(module_name).dtype)
            prefix = f"{module_name}." if module_name else ""
            for name in [n for n in state if n.startswith(prefix) and "." not in n[len(prefix) :]]:
                if state[name].is_floating_point() and plan.codec_for(name) == EXACT:
                    plan.assign(model, name, codec)
