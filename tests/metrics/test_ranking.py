"""Ranking metrics against hand-computed rankings, a naive reference, and invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedcl.data.interactions import Interactions
from fedcl.metrics.ranking import (
    EvalTask,
    UserMetrics,
    aggregate,
    build_eval_task,
    drop_targets,
    evaluate,
    evaluate_sampled,
    sample_negatives,
)

L2, L3, L4 = 1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(5)  # discounts of ranks 2, 3, 4
IDCG2 = 1 + L2  # ideal DCG of two targets


def make_task(targets: list[list[int]], masks: list[list[int]], n_items: int) -> EvalTask:
    """An EvalTask for users 0..U-1 from per-user lists."""

    def csr(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ptr = torch.tensor([0, *torch.tensor([len(r) for r in rows]).cumsum(0).tolist()])
        return ptr, torch.tensor([i for r in rows for i in r], dtype=torch.long)

    tp, ti = csr(targets)
    mp, mi = csr(masks)
    return EvalTask(torch.arange(len(targets)), tp, ti, mp, mi, n_items, "new")


def fixed(scores: torch.Tensor):
    """A score_all over a fixed (n_users, n_items) score matrix."""
    return lambda users: scores[users]


def events(rows: list[tuple[int, int, int]], n_users: int, n_items: int) -> Interactions:
    u, i, t = (torch.tensor(c, dtype=torch.long) for c in zip(*rows, strict=True))
    return Interactions(u, i, t, n_users, n_items)


# --- full-catalogue metrics, by hand --------------------------------------------------------
def test_hand_computed_full_ranking() -> None:
    scores = torch.tensor(
        [
            # ranking: 0, 2, 3, 4, 1, 5 -> targets 3, 4 at ranks 3, 4
            [0.9, 0.1, 0.5, 0.5, 0.3, 0.0],
            # tie 0.8 on items 1 and 4: lower index first -> target 4 at rank 2
            [0.2, 0.8, 0.2, 0.2, 0.8, 0.1],
            # all tied: rank = index + 1 -> targets 5, 0 at ranks 6, 1
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    task = make_task([[3, 4], [4], [5, 0]], [[], [], []], n_items=6)

    m = evaluate(fixed(scores), task, ks=(2, 4))

    # user 0: nothing in top 2; top 4 holds both (DCG = 1/log2 4 + 1/log2 5), MRR 1/3
    # user 1: rank 2 -> DCG = 1/log2 3, ideal DCG of one target = 1, MRR 1/2
    # user 2: rank 1 only -> DCG = 1, ideal DCG of two targets = 1 + 1/log2 3, recall 1/2
    expected = {
        "hr@2": [0, 1, 1],
        "hr@4": [1, 1, 1],
        "ndcg@2": [0, L2, 1 / IDCG2],
        "ndcg@4": [(L3 + L4) / IDCG2, L2, 1 / IDCG2],
        "recall@2": [0, 1, 0.5],
        "recall@4": [1, 1, 0.5],
        "mrr": [1 / 3, 1 / 2, 1],
    }
    assert list(m.values) == ["hr@2", "hr@4", "ndcg@2", "ndcg@4", "recall@2", "recall@4", "mrr"]
    for name, want in expected.items():
        assert m[name].tolist() == pytest.approx(want), name
    agg = aggregate(m)
    assert agg["n_users"] == 3
    assert agg["hr@2"] == pytest.approx(2 / 3)
    assert agg["mrr"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)
    assert m.aggregate() == agg


def test_recall_is_not_capped_at_k() -> None:
    # 3 targets, K = 1, the top item is a target: recall 1/3 (a capped recall would say 1)
    task = make_task([[0, 1, 2]], [[]], n_items=4)
    m = evaluate(fixed(torch.tensor([[3.0, 2.0, 1.0, 0.0]])), task, ks=(1,))
    assert m["recall@1"].tolist() == pytest.approx([1 / 3])
    assert m["ndcg@1"].tolist() == pytest.approx([1.0])  # ideal DCG of min(3, 1) targets


def test_ties_go_to_lower_item_index() -> None:
    # items 1 and 2 tie at the top: target 2 ranks 2nd, target 1 would rank 1st
    scores = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    m = evaluate(fixed(scores), make_task([[2], [1]], [[], []], 3), ks=(1,))
    assert m["hr@1"].tolist() == [0.0, 1.0]
    assert m["mrr"].tolist() == [0.5, 1.0]


# --- building tasks: variants, masking, cold and dropped users ------------------------------
HISTORY = [(0, 0, 1), (1, 4, 2), (3, 2, 3), (0, 1, 4)]  # (user, item, time)
TEST = [
    (0, 3, 10),
    (2, 1, 11),  # user 2 has no history: cold
    (0, 0, 12),  # re-buy of a history item
    (1, 4, 13),  # user 1 only re-buys
    (3, 7, 14),  # item 7 >= history.n_items
    (0, 3, 15),  # duplicate purchase
    (3, 2, 16),  # re-buy
    (3, 5, 17),
]


@pytest.fixture
def history_test() -> tuple[Interactions, Interactions]:
    return events(HISTORY, 5, 6), events(TEST, 5, 8)


def csr_lists(ptr: torch.Tensor, items: torch.Tensor) -> list[list[int]]:
    return [items[ptr[u] : ptr[u + 1]].tolist() for u in range(ptr.numel() - 1)]


def test_build_new_variant(history_test) -> None:
    task = build_eval_task(*history_test, "new")
    assert task.users.tolist() == [0, 3]
    assert csr_lists(task.target_ptr, task.target_items) == [[3], [7, 5]]
    assert csr_lists(task.mask_ptr, task.mask_items) == [[0, 1], [2]]
    assert (task.n_items, task.n_cold_users, task.n_dropped_users) == (8, 1, 1)


def test_build_repeat_variant(history_test) -> None:
    task = build_eval_task(*history_test, "repeat")
    assert task.users.tolist() == [0, 1, 3]
    # targets in order of first purchase in the test part
    assert csr_lists(task.target_ptr, task.target_items) == [[3, 0], [4], [7, 2, 5]]
    assert task.mask_ptr.tolist() == [0, 0, 0, 0] and task.mask_items.numel() == 0
    assert (task.n_cold_users, task.n_dropped_users) == (1, 0)


def test_drop_targets_leaves_out_bought_pairs_and_empty_users(history_test) -> None:
    task = build_eval_task(*history_test, "new")  # users 0: [3] mask [0, 1]; 3: [7, 5] mask [2]
    later = events([(3, 7, 20), (0, 3, 21), (1, 5, 22), (3, 3, 23)], 5, 8)

    out = drop_targets(task, later.users, later.items)

    assert out.users.tolist() == [3]  # user 0's only target was bought later: dropped
    assert csr_lists(out.target_ptr, out.target_items) == [[5]]  # order kept
    assert csr_lists(out.mask_ptr, out.mask_items) == [[2]]
    assert (out.n_cold_users, out.n_dropped_users) == (1, task.n_dropped_users + 1)


def test_drop_targets_without_a_match_returns_the_task(history_test) -> None:
    task = build_eval_task(*history_test, "repeat")
    later = events([(0, 5, 20), (2, 3, 21)], 5, 8)

    assert drop_targets(task, later.users, later.items) is task


def test_build_rejects_unknown_variant(history_test) -> None:
    with pytest.raises(ValueError, match="variant"):
        build_eval_task(*history_test, "old")


def test_history_item_with_top_score_masked_in_new_counted_in_repeat(history_test) -> None:
    scores = torch.zeros(5, 8)
    scores[0] = torch.tensor([0.9, 0.1, 0.5, 0.5, 0.3, 0.0, 0.0, 0.0])  # history {0, 1}
    scores[3] = torch.tensor([0.0, 0.0, 0.9, 0.0, 0.0, 0.2, 0.0, 0.8])  # history {2}

    new = evaluate(fixed(scores), build_eval_task(*history_test, "new"), ks=(1, 2))
    rep = evaluate(fixed(scores), build_eval_task(*history_test, "repeat"), ks=(1, 3))

    # new, user 0: item 0 masked -> order 2, 3, ... -> target 3 at rank 2
    # new, user 3: item 2 masked -> order 7, 5, ... -> targets at ranks 1, 2
    assert new["hr@1"].tolist() == [0.0, 1.0]
    assert new["mrr"].tolist() == pytest.approx([0.5, 1.0])
    assert new["ndcg@2"].tolist() == pytest.approx([L2, 1.0])
    assert new["recall@1"].tolist() == pytest.approx([0.0, 0.5])
    # repeat, user 0: nothing masked -> targets 3, 0 at ranks 3, 1 (item 0 counts);
    # user 1 (all scores 0): target 4 at rank 5; user 3: targets 7, 2, 5 at ranks 2, 1, 3
    assert rep["hr@1"].tolist() == [1.0, 0.0, 1.0]
    assert rep["recall@1"].tolist() == pytest.approx([0.5, 0.0, 1 / 3])
    assert rep["ndcg@3"].tolist() == pytest.approx([(1 + L3) / IDCG2, 0.0, 1.0])
    assert rep["mrr"].tolist() == pytest.approx([1.0, 1 / 5, 1.0])


# --- batching, devices, bad input -----------------------------------------------------------
def random_task(seed: int, n_users: int = 40, n_items: int = 30) -> tuple[EvalTask, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hist = Interactions(
        torch.randint(n_users, (200,), generator=g),
        torch.randint(n_items, (200,), generator=g),
        torch.arange(200),
        n_users,
        n_items,
    )
    test = Interactions(
        torch.randint(n_users, (120,), generator=g),
        torch.randint(n_items, (120,), generator=g),
        torch.arange(200, 320),
        n_users,
        n_items,
    )
    scores = torch.randint(0, 5, (n_users, n_items), generator=g).float()  # many ties
    return build_eval_task(hist, test, "new"), scores


def test_batch_size_does_not_change_results() -> None:
    task, scores = random_task(0)
    one = evaluate(fixed(scores), task, batch_size=1)
    big = evaluate(fixed(scores), task, batch_size=1024)
    assert torch.equal(one.users, big.users)
    for name in big.values:
        assert torch.equal(one[name], big[name]), name


class TinyModel(nn.Module):
    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(scores)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.table[users]


def test_bound_module_method_and_integer_scores() -> None:
    task, scores = random_task(1)
    ref = evaluate(fixed(scores), task)
    via_model = evaluate(TinyModel(scores.clone()).score_all, task)
    as_int = evaluate(fixed(scores.long()), task)
    for name in ref.values:
        assert torch.equal(ref[name], via_model[name])
        assert torch.equal(ref[name], as_int[name])


def test_too_few_score_columns_is_a_clear_error() -> None:
    task = make_task([[5]], [[]], n_items=6)
    with pytest.raises(ValueError, match="grow the model"):
        evaluate(fixed(torch.zeros(1, 4)), task)


def test_empty_task_aggregates_to_none() -> None:
    task = make_task([], [], n_items=3)
    m = evaluate(fixed(torch.zeros(0, 3)), task)
    agg = aggregate(m)
    assert agg["n_users"] == 0 and agg["ndcg@10"] is None and agg["mrr"] is None


def test_aggregate_pools_users() -> None:
    a = UserMetrics(torch.tensor([0, 1]), {"mrr": torch.tensor([1.0, 0.0], dtype=torch.float64)})
    b = UserMetrics(torch.tensor([0]), {"mrr": torch.tensor([1.0], dtype=torch.float64)})
    assert aggregate([a, b]) == {"mrr": pytest.approx(2 / 3), "n_users": 3}


# --- property test against a naive reference ------------------------------------------------
def reference(scores: list[list[float]], targets, masks, ks) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for s, tg, mk in zip(scores, targets, masks, strict=True):
        s = [-math.inf if j in mk else v for j, v in enumerate(s)]
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))
        ranks = [order.index(t) + 1 for t in tg]
        for k in ks:
            hits = [r for r in ranks if r <= k]
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(tg), k) + 1))
            out.setdefault(f"hr@{k}", []).append(float(bool(hits)))
            out.setdefault(f"ndcg@{k}", []).append(sum(1 / math.log2(r + 1) for r in hits) / idcg)
            out.setdefault(f"recall@{k}", []).append(len(hits) / len(tg))
        out.setdefault("mrr", []).append(1 / min(ranks))
    return out


@st.composite
def ranking_cases(draw):
    n_items = draw(st.integers(1, 8))
    n_users = draw(st.integers(1, 5))
    scores = [[draw(st.integers(0, 3)) / 2 for _ in range(n_items)] for _ in range(n_users)]
    targets, masks = [], []
    for _ in range(n_users):
        perm = draw(st.permutations(range(n_items)))
        n_t = draw(st.integers(1, n_items))
        n_m = draw(st.integers(0, n_items - n_t))
        targets.append(list(perm[:n_t]))
        masks.append(sorted(perm[n_t : n_t + n_m]))
    return scores, targets, masks, n_items


@settings(max_examples=60, deadline=None)
@given(ranking_cases(), st.integers(1, 3))
def test_matches_naive_reference(case, batch_size: int) -> None:
    scores, targets, masks, n_items = case
    ks = (1, 3)
    m = evaluate(fixed(torch.tensor(scores)), make_task(targets, masks, n_items), ks, batch_size)
    for name, want in reference(scores, targets, masks, ks).items():
        assert m[name].tolist() == pytest.approx(want), name
    for k in ks:
        assert torch.all((m[f"ndcg@{k}"] >= 0) & (m[f"ndcg@{k}"] <= m[f"hr@{k}"] + 1e-12))
        assert torch.all(m[f"recall@{k}"] <= m[f"hr@{k}"])
    assert torch.all((m["mrr"] > 0) & (m["mrr"] <= 1))


# --- sampled protocol -----------------------------------------------------------------------
def test_negatives_avoid_history_and_targets() -> None:
    task, _ = random_task(2)
    neg = sample_negatives(task, 99, torch.Generator().manual_seed(0))
    assert neg.shape == (task.n_users, 99)
    targets = csr_lists(task.target_ptr, task.target_items)
    masks = csr_lists(task.mask_ptr, task.mask_items)
    for u in range(task.n_users):
        forbidden = set(targets[u]) | set(masks[u])
        assert not forbidden & set(neg[u].tolist())
        assert all(0 <= j < task.n_items for j in neg[u].tolist())


def test_negatives_are_uniform_over_allowed_items() -> None:
    task = make_task([[3]], [[0, 4, 9]], n_items=10)  # 6 allowed items
    neg = sample_negatives(task, 60_000, torch.Generator().manual_seed(1))
    counts = torch.bincount(neg[0], minlength=10)
    assert counts[[0, 3, 4, 9]].sum() == 0
    freq = counts[[1, 2, 5, 6, 7, 8]] / 60_000
    assert torch.all((freq - 1 / 6).abs() < 0.01)


def test_sampled_is_deterministic_and_ranks_the_first_target() -> None:
    task, scores = random_task(3)
    first = task.target_items[task.target_ptr[:-1]]

    def run(seed: int, score_all) -> UserMetrics:
        return evaluate_sampled(score_all, task, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(7, fixed(scores)), run(7, fixed(scores)), run(8, fixed(scores))
    assert all(torch.equal(a[n], b[n]) for n in a.values)
    assert not torch.equal(a["mrr"], c["mrr"])
    assert list(a.values) == ["hr@10", "ndcg@10", "mrr"]

    # The positive (first target) always competes: top score -> rank 1; bottom -> rank 100.
    top = torch.zeros(scores.shape)
    top[task.users, first] = 1.0
    assert run(7, fixed(top))["mrr"].tolist() == [1.0] * task.n_users
    assert run(7, fixed(-top))["mrr"].tolist() == pytest.approx([1 / 100] * task.n_users)

    # All scores tied: rank = 1 + number of sampled negatives with a lower item index.
    neg = sample_negatives(task, 99, torch.Generator().manual_seed(7))
    want = 1.0 / (1 + (neg < first[:, None]).sum(1)).double()
    assert torch.equal(run(7, fixed(torch.zeros(scores.shape)))["mrr"], want)


def test_sampled_positive_is_the_earliest_purchase() -> None:
    hist = events([(0, 0, 1)], 1, 6)
    test = events([(0, 5, 10), (0, 2, 11)], 1, 6)
    task = build_eval_task(hist, test, "new")
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 9.0]])  # item 5 on top
    m = evaluate_sampled(fixed(scores), task, generator=torch.Generator().manual_seed(0))
    assert m["hr@10"].tolist() == [1.0] and m["mrr"].tolist() == [1.0]


# --- the fast ranking path against the ordering rule itself ---------------------------------
def rule_metrics(scores: torch.Tensor, task: EvalTask, ks) -> dict[str, list[float]]:
    """Metrics from ranks computed one target at a time by the module docstring's formula
    ``1 + #{s_k > s_j} + #{s_k == s_j and k < j}`` (NaN -> -inf, masked items -inf)."""
    out: dict[str, list[float]] = {}
    targets = csr_lists(task.target_ptr, task.target_items)
    masks = csr_lists(task.mask_ptr, task.mask_items)
    for u, tg in enumerate(targets):
        s = scores[task.users[u]].clone()
        s = s if s.is_floating_point() else s.double()
        s[s.isnan()] = -math.inf
        s[masks[u]] = -math.inf
        ar = torch.arange(s.numel())
        ranks = [int(1 + (s > s[j]).sum() + ((s == s[j]) & (ar < j)).sum()) for j in tg]
        for k in ks:
            hits = [r for r in ranks if r <= k]
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(tg), k) + 1))
            out.setdefault(f"hr@{k}", []).append(float(bool(hits)))
            out.setdefault(f"ndcg@{k}", []).append(sum(1 / math.log2(r + 1) for r in hits) / idcg)
            out.setdefault(f"recall@{k}", []).append(len(hits) / len(tg))
        out.setdefault("mrr", []).append(1 / min(ranks))
    return out


def tied_scores(kind: str, shape: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """Score matrices full of ties, signed zeros, NaN, infinities or sub-float32 gaps."""
    ints = torch.randint(0, 4, shape, generator=g)
    if kind == "int0..3":
        return ints.float()
    if kind == "special":  # -0.0 ties +0.0, NaN ties -inf (and masked items)
        vals = torch.tensor([0.0, -0.0, math.nan, math.inf, -math.inf, 1.0, 1.0])
        return vals[torch.randint(0, 7, shape, generator=g)]
    if kind == "float64_fine":  # distinct in float64, all equal once cast to float32
        return 1.0 + ints.double() * 2.0**-40
    if kind == "float16":
        return ints.half() / 4
    if kind == "bfloat16":
        return ints.bfloat16() - 1
    if kind == "long":
        return ints - 2
    return torch.randn(shape, generator=g)


@pytest.mark.parametrize(
    "kind", ["int0..3", "special", "float64_fine", "float16", "bfloat16", "long", "randn"]
)
@pytest.mark.parametrize("n_items", [15, 300])
def test_matches_rule_on_large_tied_inputs(kind: str, n_items: int) -> None:
    g = torch.Generator().manual_seed(n_items)
    n_users = 50
    targets, masks = [], []
    for _ in range(n_users):
        perm = torch.randperm(n_items, generator=g).tolist()
        n_t = int(torch.randint(1, min(25, n_items - 3), (1,), generator=g))
        targets.append(perm[:n_t])
        masks.append(sorted(perm[n_t : n_t + int(torch.randint(0, 4, (1,), generator=g))]))
    task = make_task(targets, masks, n_items)
    scores = tied_scores(kind, (n_users, n_items + 2), g)  # extra columns are ranked too
    ks = (1, 10, 20)  # 20 > n_items = 15: the top-k covers the whole row
    want = rule_metrics(scores, task, ks)
    for batch_size in (7, 1024):
        m = evaluate(fixed(scores), task, ks, batch_size)
        for name, values in want.items():
            assert m[name].tolist() == pytest.approx(values), (name, batch_size)


def test_float64_scores_keep_full_precision() -> None:
    # 1 + 2^-40 rounds to 1.0 in float32; the exact order still puts item 1 first
    scores = torch.tensor([[1.0, 1.0 + 2.0**-40, 1.0]], dtype=torch.float64)
    m = evaluate(fixed(scores), make_task([[0]], [[]], 3), ks=(1,))
    assert m["hr@1"].tolist() == [0.0] and m["mrr"].tolist() == [0.5]


def test_tie_across_the_top_k_cut_goes_to_lower_indices() -> None:
    # 5 items tie at 1.0 around the cut k = 2; item 4 is ahead of them; targets 3 and 5
    scores = torch.tensor([[1.0, 0.0, 1.0, 1.0, 2.0, 1.0, 1.0]])
    m = evaluate(fixed(scores), make_task([[5, 3]], [[]], 7), ks=(2, 4))
    # ranking: 4, 0, 2, 3, 5, 6, 1 -> targets at ranks 4 and 5
    assert m["hr@2"].tolist() == [0.0] and m["hr@4"].tolist() == [1.0]
    assert m["recall@4"].tolist() == [0.5] and m["mrr"].tolist() == [0.25]


# --- build_eval_task against a plain-Python reference ----------------------------------------
def naive_task(history, test, variant: str):
    """(users, targets, masks, n_cold, n_dropped) by dictionaries and a stable time sort."""
    seen: dict[int, set[int]] = {}
    for u, i, _ in history:
        seen.setdefault(u, set()).add(i)
    bought: dict[int, list[int]] = {}
    for u, i, _ in sorted(test, key=lambda e: e[2]):
        if i not in bought.setdefault(u, []):
            bought[u].append(i)
    users, targets, masks, dropped = [], [], [], 0
    for u in sorted(u for u in bought if u in seen):
        tg = [i for i in bought[u] if variant == "repeat" or i not in seen[u]]
        if not tg:
            dropped += 1
            continue
        users.append(u)
        targets.append(tg)
        masks.append(sorted(seen[u]) if variant == "new" else [])
    cold = sum(u not in seen for u in bought)
    return users, targets, masks, cold, dropped


event_lists = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 9), st.integers(0, 5)))


@settings(max_examples=150, deadline=None)
@given(event_lists, event_lists, st.sampled_from(["new", "repeat"]))
def test_build_matches_naive_reference(history, test, variant: str) -> None:
    hist = events(history, 7, 8) if history else Interactions.empty(7, 8)
    tst = events(test, 7, 10) if test else Interactions.empty(7, 10)  # test times unsorted
    task = build_eval_task(hist, tst, variant)
    users, targets, masks, cold, dropped = naive_task(history, test, variant)
    assert task.users.tolist() == users
    assert csr_lists(task.target_ptr, task.target_items) == targets
    assert csr_lists(task.mask_ptr, task.mask_items) == masks
    assert (task.n_items, task.n_cold_users, task.n_dropped_users) == (10, cold, dropped)
    for t in (task.users, task.target_ptr, task.target_items, task.mask_ptr, task.mask_items):
        assert t.dtype == torch.long
