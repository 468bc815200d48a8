"""A retraining step driven from a plain PyTorch loop: prepare, step, finalize, save, load."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import netshrink
from netshrink.errors import RecipeError
from netshrink.methods.iterative_prune import IterativePrune
from netshrink.methods.trained_quantization import TrainedQuantization


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def batches(n: int = 12, size: int = 16):
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        x = torch.randn(size, 8, generator=g)
        yield x, x[:, :3].argmax(1)


def tiny() -> Tiny:
    torch.manual_seed(0)
    return Tiny()


@pytest.mark.parametrize("attach", [False, True])
def test_trained_quantization_from_a_plain_loop_saves_what_it_trained(tmp_path, attach):
    model = tiny()
    step = TrainedQuantization(bits=2, overrides={"fc1": {"bits": 3}})
    session = step.prepare(model)
    clustered = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if attach:
        session.attach(optimizer)
    for x, y in batches():
        optimizer.zero_grad()
        loss = session.loss(F.cross_entropy(model(x), y))
        loss.backward()
        if not attach:
            session.after_backward()
        optimizer.step()
        if not attach:
            session.after_step()
    assert session.steps == 12
    compressed = session.finalize()
    compressed.save(tmp_path / "own.nsk")
    loaded = netshrink.load(tmp_path / "own.nsk", model=Tiny())
    for name, tensor in compressed.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    for name, bits in (("fc1.weight", 3), ("fc2.weight", 2)):
        weight = loaded.state_dict()[name]
        assert len(torch.unique(weight)) <= 2**bits, name
        assert not torch.equal(weight, clustered[name]), f"{name}: the centroids should have moved"
    assert compressed.plan.codec_for("fc1.weight").describe() == "palette3"
    assert compressed.recipe.steps == (step,)


def test_a_step_that_retrains_in_rounds_says_it_runs_through_compress():
    with pytest.raises(RecipeError, match="iterative_prune retrains in several phases"):
        IterativePrune().prepare(tiny())
