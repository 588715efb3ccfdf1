"""MF's fused BPR loss against autograd and a finite-difference check."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedcl.models.mf import BPRLoss


def reference(u, vp, vn, bp, bn, reg):
    x = (vp.unsqueeze(1) * u.unsqueeze(1)).sum(-1) - (vn * u.unsqueeze(1)).sum(-1) + bp - bn
    l2 = u.pow(2).sum(-1) + vp.pow(2).sum(-1) + vn.pow(2).sum(-1).mean(-1)
    return -F.logsigmoid(x).mean() + reg * l2.mean()


def inputs(b: int = 5, k: int = 3, d: int = 4):
    gen = torch.Generator().manual_seed(0)
    shapes = [(b, d), (b, d), (b, k, d), (b, 1), (b, k)]
    return [torch.randn(s, generator=gen, dtype=torch.double, requires_grad=True) for s in shapes]


def test_bpr_loss_matches_autograd_value_and_gradients():
    fused_in, ref_in = inputs(), inputs()
    fused, ref = BPRLoss.apply(*fused_in, 0.3), reference(*ref_in, 0.3)
    fused.backward()
    ref.backward()
    torch.testing.assert_close(fused, ref)
    for a, b in zip(fused_in, ref_in, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_bpr_loss_passes_gradcheck():
    assert torch.autograd.gradcheck(lambda *t: BPRLoss.apply(*t, 0.1), tuple(inputs(3, 2, 3)))
