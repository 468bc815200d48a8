"""Retraining from any training loop: hooks bound to a model, driven one optimiser step at a time.

A retraining method is a set of `TrainHook`s with the coremltools-style life: `prepare(model)`
before the first step, then per step `loss(model)` (an extra term such as a regulariser),
`after_backward(model)` (edit gradients: hold pruning masks, share centroid gradients) and
`after_step(model, step)` (re-project, refresh state), and `finalize(model)` at the end. A
`TrainingSession` drives them: `netshrink.training.loop.fit` is one client, your own loop (plain
PyTorch, PyTorch Lightning, the Hugging Face Trainer) another. A retraining step starts one with
`step.prepare(model)`; `finalize()` then returns the compressed model:

    step = TrainedQuantization(bits=4, overrides={"conv1": {"bits": 8}})
    session = step.prepare(model)                  # clusters the layers, ties each cluster's weights
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    session.attach(optimizer)                      # or call after_backward() / after_step() yourself
    for x, y in loader:
        optimizer.zero_grad()
        loss = session.loss(F.cross_entropy(model(x), y))   # plus the method's own term, if any
        loss.backward()
        optimizer.step()
    session.finalize().save("model.nsk")           # each layer on at most 2^bits values

Without `attach`, call `session.after_backward()` between `loss.backward()` and `optimizer.step()`,
and `session.after_step()` after it; in Lightning, the same two calls belong in
`on_before_optimizer_step` and `on_train_batch_end`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn


class TrainHook:
    """No-op base: override the phases a method needs."""

    def prepare(self, model: nn.Module) -> None:
        pass

    def loss(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def after_backward(self, model: nn.Module) -> None:
        pass

    def after_step(self, model: nn.Module, step: int) -> None:
        pass

    def finalize(self, model: nn.Module) -> None:
        pass


class TrainingSession:
    """`hooks` prepared on `model`, then driven by the caller: `loss`, `after_backward` and
    `after_step` once per optimiser step, `finalize` once at the end (returning what `finish`,
    if given, returns: a retraining step's compressed model)."""

    def __init__(self, model: nn.Module, hooks: Sequence[TrainHook], finish: Callable[[], Any] | None = None) -> None:
        self.model, self.hooks, self.finish = model, list(hooks), finish
        self.steps = 0
        self.handles: list[Any] = []
        for hook in self.hooks:
            hook.prepare(model)

    def loss(self, task_loss: torch.Tensor) -> torch.Tensor:
        """`task_loss` plus each hook's extra term (a penalty or regulariser), in hook order."""
        for hook in self.hooks:
            extra = hook.loss(self.model)
            if extra is not None:
                task_loss = task_loss + extra
        return task_loss

    def after_backward(self) -> None:
        """Edit the gradients (after `loss.backward()`, before `optimizer.step()`)."""
        for hook in self.hooks:
            hook.after_backward(self.model)

    def after_step(self) -> None:
        """Update the hooks' state after `optimizer.step()`."""
        for hook in self.hooks:
            hook.after_step(self.model, self.steps)
        self.steps += 1

    def attach(self, optimizer: torch.optim.Optimizer) -> TrainingSession:
        """Run `after_backward` / `after_step` around every `optimizer.step()` (for loops you do not
        write yourself); `finalize` detaches them."""
        self.handles += [
            optimizer.register_step_pre_hook(lambda *_: self.after_backward()),
            optimizer.register_step_post_hook(lambda *_: self.after_step()),
        ]
        return self

    def finalize(self) -> Any:
        """Fold the hooks' state back into plain weights; what `finish` returns (None without it)."""
        for handle in self.handles:
            handle.remove()
        for hook in self.hooks:
            hook.finalize(self.model)
        return self.finish() if self.finish is not None else None
