"""siglip against OpenCLIP's own `SigLipLoss` (installed with open_clip) on the same inputs,
float64:
loss and gradients (features, τ⁻¹, bias) over a grid of batch sizes, scales and biases, learnable or
fixed; the --local-loss row split against the whole batch; and the method's initialisation."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import SigLipLoss as OpenClipSigLip

from cloob.trainer import losses, methods

GRID = list(itertools.product((1, 2, 7, 32), (1.0, 10.0, 112.0), (-10.0, -3.5, 0.0, 2.0)))


def features(n, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64) + 0.7 * x, dim=-1)
    return x, y


@pytest.mark.parametrize(("n", "inv_tau", "bias"), GRID)
@pytest.mark.parametrize("learnable", [True, False])
def test_equals_open_clip_siglip(n, inv_tau, bias, learnable):
    x, y = features(n, seed=n)
    results = []
    for fn in (
        lambda x, y, t, b: losses.siglip_loss(x, y, t, b),
        lambda x, y, t, b: OpenClipSigLip()(x, y, t, b),
    ):
        xs, ys = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        t = torch.tensor(inv_tau, dtype=torch.float64, requires_grad=learnable)
        b = torch.tensor(bias, dtype=torch.float64, requires_grad=learnable)
        value = fn(xs, ys, t, b)
        wrt = (xs, ys, t, b) if learnable else (xs, ys)
        results.append((value, torch.autograd.grad(value, wrt)))
    (ours, g_ours), (theirs, g_theirs) = results
    # float64 rounding of two orderings of the same sums at most; a failure names the greatest
    # absolute and relative difference
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-13)
    for a, r in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("world", [2, 4])
def test_local_rows_average_to_the_whole_batch(world):
    """Each simulated rank's rows against all texts: the mean of the rank losses is the loss, and
    the summed gradients (what the gathers and DDP's averaging give) are its gradient."""
    n = 3 * world
    x, y = features(n, seed=5)
    t = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(-4.0, dtype=torch.float64, requires_grad=True)
    whole = losses.siglip_loss(x, y, t, b)
    g_whole = torch.autograd.grad(whole, (t, b))
    parts = [
        losses.siglip_loss(x, y, t, b, losses.LocalRows(r * 3, (r + 1) * 3, lambda v: v))
        for r in range(world)
    ]
    mean = torch.stack(parts).mean()
    torch.testing.assert_close(mean, whole, rtol=1e-13, atol=0)
    for a, r in zip(torch.autograd.grad(mean, (t, b)), g_whole, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=0)


def test_initialisation_and_table():
    assert "siglip" in methods.METHODS and "siglip" in methods.METHOD_HELP
    assert methods.default_inv_tau("siglip") == 10.0 and methods.default_inv_tau("cloob") is None
    loss = losses.create_loss("siglip")
    assert loss.logit_bias.item() == -10.0 and loss.logit_bias.requires_grad


def test_at_initialisation_every_pair_looks_negative():
    """The method's starting τ⁻¹ and the objective's starting bias together: even a pair of equal
    features (cos = 1, the largest logit there is) gets σ(τ⁻¹·cos + b) ≤ ½. Read from the method
    table and the module, so changing either default alone fails here."""
    inv_tau = methods.default_inv_tau("siglip")
    assert inv_tau is not None
    bias = losses.create_loss("siglip").logit_bias.detach().double()
    x, _ = features(8)
    logits = inv_tau * x @ x.t() + bias
    assert torch.sigmoid(logits).max() <= 0.5 + 1e-12
