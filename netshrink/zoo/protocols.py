"""What recipe steps and the file reader may ask of a model, declared as `typing.Protocol`s.

A step never names an architecture: it asks whether the model it was given has the capability it
needs (`isinstance(model, GapHeadSwitch)`), and the zoo answers for its own models
(`netshrink.zoo.models_with`). A model outside the zoo gains a capability by having the members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class DescribesArch(Protocol):
    """A model that can say how it differs from its zoo default, so a file stores the arguments that
    rebuild it after a step changed its shape: `build_model(name, **model.arch_options())`."""

    def arch_options(self) -> dict[str, Any]: ...


@runtime_checkable
class HasHead(Protocol):
    """A model that says what its classifier head is: "gap" (global average pooling + linear) or
    "fc" (flatten + fully connected)."""

    head: str


@runtime_checkable
class GapHeadSwitch(HasHead, DescribesArch, Protocol):
    """A model that can replace its flatten + FC head by global average pooling in place, recording
    the change in `arch_options()`."""

    def to_gap_head(self) -> None: ...


@dataclass(frozen=True)
class BlockLayout:
    """Where a model's repeated blocks are, by module name: the modules that run before them (the
    token embedding), the `nn.ModuleList` of blocks, and the modules after them (final norm, head)."""

    prefix: tuple[str, ...]
    blocks: str
    suffix: tuple[str, ...]


@runtime_checkable
class BlockStructure(Protocol):
    """A model that runs as prefix -> block 0 -> ... -> block n-1 -> suffix, each block mapping hidden
    states to hidden states of the same shape. Such a model can be compressed one block at a time
    (`netshrink.streaming`): only one block need be in memory, with the hidden states that enter it."""

    def block_layout(self) -> BlockLayout: ...

    def embed(self, tokens: Any) -> Any: ...

    def run_block(self, block: Any, hidden: Any) -> Any: ...

    def head(self, hidden: Any) -> Any: ...
