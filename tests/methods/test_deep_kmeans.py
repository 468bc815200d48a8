"""Deep k-Means: the regulariser's gradient is lambda W (I - F F^T); sharing and fine-tuning keep k codewords."""

import pytest
import torch

import netshrink
from netshrink.errors import RecipeError
from netshrink.format.codecs.pq import subvectors
from netshrink.methods.deep_kmeans import SpectralKMeansHook, SpectralTerm
from netshrink.recipe import parse_recipe


def recipe(*steps):
    return parse_recipe({"name": "test", "steps": list(steps)})


def dense_f(term: SpectralTerm, n: int) -> torch.Tensor:
    """F as an explicit N x k matrix (the normalised cluster indicator, or the SVD basis)."""
    if term.basis is not None:
        return term.basis
    k = int(term.labels.max()) + 1
    f = torch.zeros(n, k)
    f[torch.arange(n), term.labels] = 1.0
    return f / f.sum(0).clamp_min(1).sqrt()


@pytest.mark.parametrize("source, k", [("kmeans", 6), ("svd", 2), ("svd", 8)])
def test_regulariser_gradient_is_lambda_w_times_i_minus_ffT(source, k):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 5, 3)
    hook = SpectralKMeansHook({"weight": SpectralTerm(d=3, k=k)}, lam=0.3, refresh_steps=10, source=source)
    hook.prepare(conv)
    with torch.no_grad():  # move W away from the refresh point, as training does between refreshes
        conv.weight.add_(0.05 * torch.randn_like(conv.weight))
    hook.loss(conv).backward()
    term = hook.terms["weight"]
    w = subvectors(conv.weight.detach(), 3).T  # s x N, columns = kernel rows
    f = dense_f(term, w.shape[1])
    expected = 0.3 * w @ (torch.eye(w.shape[1]) - f @ f.T)
    assert torch.allclose(subvectors(conv.weight.grad, 3).T, expected, atol=1e-5)


def test_kmeans_term_equals_the_clustering_sse():
    torch.manual_seed(0)
    weight = torch.randn(8, 2, 1, 3)
    term = SpectralTerm(d=3, k=4)
    term.refresh(weight, "kmeans", seed=0)
    columns = subvectors(weight, 3)
    centres = torch.stack([columns[term.labels == c].mean(0) for c in range(4)])
    assert float(term.value(weight)) == pytest.approx(float((columns - centres[term.labels]).pow(2).sum()), rel=1e-5)


def test_deep_kmeans_step_stores_k_codewords_and_round_trips(tiny_net, tiny_images, tmp_path):
    steps = recipe(
        {
            "deep_kmeans": {
                "clusters": 8,
                "linear_d": 4,
                "epochs": 0.5,
                "finetune_epochs": 0.5,
                "batch_size": 32,
                "lam": 0.01,
                "refresh_steps": 2,
            }
        }
    )
    compressed = netshrink.compress(tiny_net, steps, data=tiny_images, progress=False)
    state = compressed.model.state_dict()
    assert len(torch.unique(subvectors(state["conv.weight"], 3), dim=0)) <= 8
    assert len(torch.unique(subvectors(state["fc.weight"], 4), dim=0)) <= 8
    compressed.save(tmp_path / "dkm.nsk")
    loaded = netshrink.load(tmp_path / "dkm.nsk", model=type(tiny_net)())
    for name, tensor in state.items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_bad_deep_kmeans_settings_name_the_field():
    with pytest.raises(RecipeError, match="f_source"):
        recipe({"deep_kmeans": {"f_source": "pca"}})
    with pytest.raises(RecipeError, match="vector"):
        recipe({"deep_kmeans": {"vector": "column"}})
