"""Bounds before aggregation: an update far above the round's median norm is rejected or
clipped with the shop's name, one shop's weight is capped to a share of the round (after
renormalisation) and to a growth over its earlier claims."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcl.errors import ConfigError
from fedcl.federated.bounds import apply_bounds, share_cap, update_norm
from fedcl.federated.config import BoundsConfig
from fedcl.result import RunResult
from fedcl.shop.replies import TrainReply

BASE = {"item_emb.weight": torch.zeros(20, 4), "dense.bias": torch.zeros(3)}


def _reply(shop: str, scale: float = 1.0, n: int = 100, seed: int = 0) -> TrainReply:
    gen = torch.Generator().manual_seed(seed)
    arrays = {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in BASE.items()}
    return TrainReply(shop, ArrayRecord(arrays), n, 0.5, 10, 1.0, 1.0)


def _round(*bad: TrainReply, honest: int = 5) -> list[TrainReply]:
    return [_reply(f"shop_{i}", seed=i) for i in range(honest)] + list(bad)


BASE_RECORD = ArrayRecord(BASE)


@pytest.mark.parametrize(
    "bad",
    [_reply("mallory", scale=100.0, seed=9), _reply("mallory", scale=1e6, seed=9)],
    ids=["x100", "huge-norm noise"],
)
def test_a_huge_update_is_rejected_with_the_shops_name(bad, caplog):
    replies = _round(bad)

    with caplog.at_level(logging.WARNING, logger="fedcl"):
        out = apply_bounds(replies, BASE_RECORD, BoundsConfig(action="reject"), {})

    assert out.replies[-1] is None and out.replies[:-1] == replies[:-1]
    assert [shop for shop, _ in out.rejected] == ["mallory"]
    assert "norm" in out.rejected[0][1]
    assert "mallory" in caplog.text


def test_a_huge_update_is_clipped_to_the_bound_with_the_shops_name(caplog):
    replies = _round(_reply("mallory", scale=100.0, seed=9))

    with caplog.at_level(logging.WARNING, logger="fedcl"):
        out = apply_bounds(replies, BASE_RECORD, BoundsConfig(action="clip"), {})

    assert out.clipped == ["mallory"] and not out.rejected
    clipped = update_norm(out.replies[-1].arrays, BASE_RECORD)
    assert clipped == pytest.approx(out.norm_bound * 10, rel=1e-5)  # sqrt(100 examples)
    norms = [update_norm(r.arrays, BASE_RECORD) for r in replies]
    assert out.norm_bound == pytest.approx(3.0 * np.median(norms) / 10)
    assert "clipped" in caplog.text and "mallory" in caplog.text


def test_honest_updates_of_different_size_pass_untouched():
    replies = [_reply(f"shop_{i}", scale=s, seed=i) for i, s in enumerate([0.5, 1, 1, 1.5, 2])]

    out = apply_bounds(replies, BASE_RECORD, BoundsConfig(), {})

    assert out.replies == replies and not out.clipped and not out.rejected


def test_a_big_shop_may_move_more_than_a_small_one_claiming_the_same_update():
    big = _reply("big", scale=8.0, n=10_000, seed=7)  # 100x the examples, 8x the norm
    small = _reply("small", scale=8.0, n=100, seed=7)

    out = apply_bounds(_round(big, small), BASE_RECORD, BoundsConfig(max_share=1.0), {})

    assert [shop for shop, _ in out.rejected] == ["small"]
    assert out.replies[-2] is big


def test_fewer_than_three_replies_have_no_norm_bound_and_say_so(caplog):
    replies = [_reply("shop_0"), _reply("mallory", scale=100.0, seed=9)]

    with caplog.at_level(logging.INFO, logger="fedcl"):
        out = apply_bounds(replies, BASE_RECORD, BoundsConfig(), {})

    assert out.replies == replies and out.norm_bound is None
    assert "no update-norm bound" in caplog.text


def test_a_claim_of_99_million_examples_gets_at_most_max_share():
    replies = _round(_reply("mallory", n=99_000_000, seed=9), honest=7)
    cfg = BoundsConfig(max_share=0.25)

    out = apply_bounds(replies, BASE_RECORD, cfg, {})

    weights = {r.shop: r.num_examples for r in out.replies}
    assert weights["mallory"] / sum(weights.values()) <= 0.25
    assert all(weights[f"shop_{i}"] == 100 for i in range(7))  # honest weights unchanged
    assert out.capped == ["mallory"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 10**9), min_size=2, max_size=12),
    st.floats(0.05, 0.95),
)
def test_share_cap_holds_after_renormalisation(weights, share):
    capped = share_cap(weights, share)

    assert all(1 <= c <= w for c, w in zip(capped, weights, strict=True))
    if len(weights) * share > 1:
        assert max(capped) <= share * sum(capped) * (1 + 1e-12)
    else:  # the cap cannot hold: equal weights
        assert len(set(capped)) == 1 or max(weights) <= share * sum(weights)


def test_a_claim_may_grow_at_most_max_growth_over_the_shops_largest_earlier_claim(caplog):
    claims: dict[str, int] = {}
    cfg = BoundsConfig(max_growth=10.0, max_share=1.0)
    apply_bounds(_round(_reply("mallory", n=50, seed=9)), BASE_RECORD, cfg, claims)

    with caplog.at_level(logging.WARNING, logger="fedcl"):
        out = apply_bounds(_round(_reply("mallory", n=10_000, seed=9)), BASE_RECORD, cfg, claims)

    assert out.replies[-1].num_examples == 500 and out.capped == ["mallory"]
    assert claims["mallory"] == 500 and claims["shop_0"] == 100
    assert "mallory" in caplog.text and "largest earlier claim" in caplog.text


def test_the_claims_history_survives_a_checkpoint():
    result = RunResult(claims={"shop_0": 120, "mallory": 500})

    assert RunResult.from_json(result.to_json()).claims == {"shop_0": 120, "mallory": 500}


def test_bounds_off_leave_every_reply_as_it_came():
    replies = _round(_reply("mallory", scale=100.0, n=99_000_000, seed=9))

    out = apply_bounds(replies, BASE_RECORD, BoundsConfig(enabled=False), {})

    assert out.replies == replies


@pytest.mark.parametrize(
    "field,value",
    [("action", "drop"), ("norm_multiple", 0.5), ("max_share", 0.0), ("max_growth", 0.5)],
)
def test_a_bad_bounds_setting_is_a_config_error_naming_the_key(field, value):
    with pytest.raises(ConfigError, match=f"federated.bounds.{field}"):
        BoundsConfig(**{field: value}).check("federated.bounds")
