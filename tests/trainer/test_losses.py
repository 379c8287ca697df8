"""Every objective and its gradient against a float64 reference written from the paper's
equations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cloob.trainer import losses

# --- the reference: plain loops over the equations in paper.md, float64 ----------------------


def ref_hopfield(state, memory, beta):
    rows = []
    for s in state:
        weights = torch.stack([beta * torch.dot(s, m) for m in memory])
        weights = torch.exp(weights - weights.max())
        weights = weights / weights.sum()
        r = sum(w * m for w, m in zip(weights, memory, strict=True))
        rows.append(r / torch.sqrt(torch.dot(r, r)))
    return torch.stack(rows)


def ref_loob(a, b, inv_tau):
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        k = [inv_tau * torch.dot(a[i], b[j]) for j in range(n)]
        total = total - k[i] + torch.logsumexp(torch.stack([k[j] for j in range(n) if j != i]), 0)
    return total / n / inv_tau


def ref_nce(a, b, inv_tau):
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        k = [inv_tau * torch.dot(a[i], b[j]) for j in range(n)]
        total = total - k[i] + torch.logsumexp(torch.stack(k), 0)
    return total / n


def ref_sigmoid(x, y, inv_tau, bias):
    """SigLIP's equation: −(1/N) Σ_i Σ_j log σ(z_ij (τ⁻¹⟨x_i, y_j⟩ + b)), z = +1 on the diagonal."""
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total = total - torch.log(torch.sigmoid(z * (inv_tau * torch.dot(x[i], y[j]) + bias)))
    return total / n


def ref_loss(method, x, y, inv_tau, beta):
    if method == "siglip":  # the grid's β doubles as the bias, negated (SigLIP's starts at −10)
        return ref_sigmoid(x, y, inv_tau, -beta)
    if method == "clip":
        return 0.5 * (ref_nce(x, y, inv_tau) + ref_nce(y, x, inv_tau))
    if method == "infoloob":
        return ref_loob(x, y, inv_tau) + ref_loob(y, x, inv_tau)
    u_xx, u_xy = ref_hopfield(x, x, beta), ref_hopfield(y, x, beta)
    u_yy, u_yx = ref_hopfield(y, y, beta), ref_hopfield(x, y, beta)
    if method == "cloob":
        return ref_loob(u_xx, u_xy, inv_tau) + ref_loob(u_yy, u_yx, inv_tau)
    return ref_nce(u_xx, u_xy, inv_tau) + ref_nce(u_yy, u_yx, inv_tau)


def call(method, x, y, inv_tau, beta):
    fn = {
        "clip": losses.clip_loss,
        "infoloob": losses.infoloob_loss,
        "cloob": losses.cloob_loss,
        "hopfield_infonce": losses.hopfield_infonce_loss,
    }.get(method)
    if method == "siglip":
        return losses.siglip_loss(x, y, inv_tau, -beta)
    return fn(x, y, inv_tau) if method in ("clip", "infoloob") else fn(x, y, inv_tau, beta)


def features(n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64) + 0.5 * x, dim=-1)
    return x.to(dtype), y.to(dtype)


@pytest.mark.parametrize("method", losses.METHODS)
def test_loss_and_gradient_match_reference(method):
    for inv_tau, beta in ((30.0, 8.0), (14.3, 14.3), (3.0, 1.0)):
        x, y = features()
        x.requires_grad_(True)
        y.requires_grad_(True)
        t = torch.tensor(inv_tau, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
        ours = call(method, x, y, t, b)
        g_ours = torch.autograd.grad(ours, (x, y, t, b), allow_unused=True)
        ref = ref_loss(method, x, y, t, b)
        g_ref = torch.autograd.grad(ref, (x, y, t, b), allow_unused=True)
        assert ours.dim() == 0
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
        for a, r in zip(g_ours, g_ref, strict=True):
            if r is None:
                assert a is None or torch.all(a == 0)
            else:
                torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-11)
        # floats work as well as tensors
        torch.testing.assert_close(call(method, x, y, inv_tau, beta), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", losses.METHODS)
def test_gradcheck(method):
    x, y = features(n=4, d=3, seed=1)
    t = torch.tensor(5.0, dtype=torch.float64)
    b = torch.tensor(3.0, dtype=torch.float64)
    inputs = tuple(v.clone().requires_grad_(True) for v in (x, y, t, b))
    assert torch.autograd.gradcheck(lambda *a: call(method, *a), inputs)


def test_positive_is_excluded_exactly():
    # With identical pairs and huge τ⁻¹ the -1000 mask of the reference would leak; ours must not.
    x, _ = features(n=3, d=4)
    inv_tau = 2000.0
    ours = losses.infoloob(x, x, inv_tau)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, ref_loob(x, x, torch.tensor(inv_tau, dtype=torch.float64)))


def test_float32_agrees_with_float64():
    x64, y64 = features(n=64, d=32, seed=3)
    for method in losses.METHODS:
        err = (
            (
                call(method, x64.float(), y64.float(), 30.0, 8.0).double()
                - call(method, x64, y64, 30.0, 8.0)
            )
            .abs()
            .item()
        )
        assert err < 1e-4, (method, err)


def test_modules_and_learnable_beta():
    x, y = features(n=8, d=6, dtype=torch.float32)
    inv_tau = torch.tensor(30.0)
    for method in losses.METHODS:
        module = losses.create_loss(method, 8.0, learnable_beta=True, init_bias=-8.0)
        value = module(x, y, inv_tau)
        torch.testing.assert_close(value, call(method, x, y, inv_tau, 8.0))
        assert math.isclose(module.beta.item(), 8.0, rel_tol=1e-6)
        if module.uses_hopfield:
            value.backward()
            assert module.logit_beta.grad is not None and module.logit_beta.grad.abs() > 0
        else:
            assert not module.logit_beta.requires_grad
    siglip = losses.create_loss("siglip")
    assert siglip.logit_bias.item() == -10.0 and siglip.logit_bias.requires_grad
    assert not losses.create_loss("siglip", learnable_bias=False).logit_bias.requires_grad
    with pytest.raises(ValueError):
        losses.create_loss("nonesuch")


@pytest.mark.parametrize("method", ["cloob", "hopfield_infonce"])
def test_chunked_logsumexp_path_matches_reference(method, monkeypatch):
    """Large batches never hold the n×N logits: rows in chunks, recomputed in backward. Forced
    here with a tiny chunk (2 rows of 6), values and gradients still equal the reference."""
    monkeypatch.setattr(losses._RowLogSumExp, "CHUNK", 12)
    x, y = (v.requires_grad_(True) for v in features())
    t = torch.tensor(14.3, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(8.0, dtype=torch.float64, requires_grad=True)
    ours = call(method, x, y, t, b)
    ref = ref_loss(method, x, y, t, b)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for a, r in zip(
        torch.autograd.grad(ours, (x, y, t, b)), torch.autograd.grad(ref, (x, y, t, b)), strict=True
    ):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-11)
    small = tuple(v[:4, :3].detach().clone().requires_grad_(True) for v in (x, y))
    assert torch.autograd.gradcheck(lambda p, q: call(method, p, q, 5.0, 3.0), small)
