"""A closed-loop world on the synthetic generator: show items to customers, see what they buy.

:func:`fedcl.data.sources.synthetic.read` writes a fixed purchase stream; a :class:`World`
draws the same catalogue, customers, seasons, launches and taste drift (the generator's own
helpers and random streams), but lets the caller decide what each visit is shown and
answers with what the customer then does. A simulation can so measure what its
recommendations change, not only how well they rank held-out purchases.

Each month ``p`` is played in order::

    visits = world.visits(p)                    # who comes when (drift applied once)
    outcome = world.respond(p, visits, shown, rng)  # what they click and buy

Visits are the generator's own ``_month_events`` of month ``p`` (same users and timestamps
as ``read``'s month ``p``), one visit per generated event, sorted by time.

Response model of one visit of user ``u`` in month ``p`` (``respond``), over the items
launched by ``p`` plus a *leave* option:

* item logit ``z_i = taste_u . vec_i + bias_i`` (taste incl. the seasonal-affinity slot,
  bias = popularity + season + novelty, exactly as the generator's choice softmax)
  ``+ influence`` if ``i`` is shown in this visit
  ``+ log(1 + n_ui)`` (habit: ``n_ui`` past purchases of ``i`` by ``u`` that the world
  saw, none for items of a seasonal category out of season);
* leave logit ``= logsumexp_i(taste_u . vec_i + bias_i) + leave_logit`` (no influence, no
  habit), so with nothing shown and no habit ``P(buy) = 1 / (1 + exp(leave_logit))``;
  showing liked items or having bought before raises it;
* the visit buys one item drawn from ``softmax`` over items and leave (or nothing);
* a shown (launched) slot is clicked with probability
  ``sigmoid(z_i - logsumexp_i(taste_u . vec_i + bias_i) + log k)``: a shown item that the
  customer would pick with probability ``1/k`` unshown is clicked half the time; the bought
  item, if shown, is always clicked. Empty (-1) and not yet launched slots are never
  clicked, and a not yet launched item is ignored (never bought, no influence).

Purchases from ``respond`` feed the habit term of later visits; :meth:`World.record` adds
purchases made elsewhere (e.g. month 0 taken from ``read``). All public indices are *plan*
indices (the catalogue of :meth:`World.plan`, items in launch order); ``plan_index`` maps a
generator item (``read``'s ``i00012`` is item 12) to its plan index; ``item_ids`` and
``launch`` are in plan order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcl.data.plan import Plan
from fedcl.data.schema import ITEM, ITEM_IDX, WINDOW
from fedcl.data.sources.synthetic import (
    _START,
    SyntheticConfig,
    _add_seasonal_slots,
    _catalogue,
    _check,
    _customers,
    _drift,
    _Month,
    _month,
    _month_events,
)

#: Visits whose (visit x launched item) logits are held at once.
CHUNK = 2048
#: World-specific stream of :meth:`World.organic`'s choices (the generator uses 0..5).
_ORGANIC_STREAM = 7


@dataclass
class Visits:
    """One month's visits, sorted by time."""

    user: np.ndarray  # (V,) global user index
    user_id: np.ndarray  # (V,) object: user names as synthetic.read ("s00_u00012")
    shop: np.ndarray  # (V,) object: shop names as synthetic.read ("shop_00")
    time: np.ndarray  # (V,) datetime64[ns]

    def __len__(self) -> int:
        return len(self.user)


@dataclass
class Outcome:
    """What each visit did."""

    item: np.ndarray  # (V,) int64 plan index bought, -1 = left without buying
    from_rec: np.ndarray  # (V,) bool: the bought item was among the shown items
    clicked: np.ndarray  # (V, k) bool: which shown slots were clicked (-1 slots never)


class World:
    """The generator's customers and catalogue, answering to what they are shown."""

    def __init__(
        self, cfg: SyntheticConfig, influence: float = 1.0, leave_logit: float = 0.0
    ) -> None:
        _check(cfg)
        self.cfg, self.influence, self.leave_logit = cfg, float(influence), float(leave_logit)
        rng = np.random.default_rng([cfg.seed, 0])  # as read: items, then users
        self._cat = _catalogue(cfg, rng)
        self._users = _customers(cfg, rng)
        _add_seasonal_slots(cfg, self._cat, self._users)
        # Plan order: items by launch month (stable), as a prepared catalogue by first sight.
        self._world_of = np.argsort(self._cat.launch, kind="stable")  # plan idx -> world item
        self.plan_index = np.empty(cfg.n_items, dtype=np.int64)  # world item -> plan index
        self.plan_index[self._world_of] = np.arange(cfg.n_items)
        names = _names(cfg, self._users.shop, self._users.local)
        self._user_names, self._shop_names, world_ids, self._cat_names = names
        #: Per plan index: the item's name in ``read``'s events and its launch month.
        self.item_ids = world_ids[self._world_of]
        self.launch = self._cat.launch[self._world_of]
        self.shops = [str(s) for s in self._shop_names]
        self._bought = np.zeros((cfg.n_users, cfg.n_items), dtype=np.int32)  # world items
        self._p = -1  # the month whose visits were drawn last
        self._month: _Month | None = None
        self._taste = np.empty((0, 0), dtype=np.float32)

    # --- public catalogue ------------------------------------------------------------
    def plan(self, test_fraction: float = 0.2) -> Plan:
        """The world's public plan: one window per calendar month, items in launch order."""
        n = self.cfg.n_periods
        start = (_START + np.arange(n)).astype("datetime64[ns]")
        end = (_START + np.arange(1, n + 1)).astype("datetime64[ns]")
        cut = pd.DatetimeIndex(start + (end - start) * (1.0 - test_fraction)).round("s")
        windows = pd.DataFrame({WINDOW: np.arange(n), "start": start, "cut": cut, "end": end})
        catalog = pd.DataFrame(
            {
                ITEM_IDX: np.arange(self.cfg.n_items, dtype=np.int64),
                ITEM: self.item_ids,
                "first_seen": (_START + self.launch).astype("datetime64[ns]"),
                "first_window": self.launch.astype(np.int64),
                "category": self._cat_names[self._cat.category[self._world_of]],
            }
        )
        return Plan(windows=windows, catalog=catalog, shops=list(self.shops))

    # --- the monthly loop --------------------------------------------------------------
    def visits(self, p: int) -> Visits:
        """Month ``p``'s visits (the generator's events of ``p``, after its drift)."""
        self._check_month(p, self._p + 1, "visits")
        rp = np.random.default_rng([self.cfg.seed, 1, p])  # read's who-buys-when stream
        if p > 0:
            _drift(self.cfg, self._users, rp)
        self._month = _month(self.cfg, self._cat, p)
        owner, ts, _, _ = _month_events(self.cfg, self._users, self._month, p, rp)
        self._taste = np.concatenate(
            [self._users.taste.astype(np.float32), self._users.affinity], axis=1
        )
        self._p = p
        order = np.argsort(ts, kind="stable")
        user = owner[order]
        return Visits(
            user=user,
            user_id=self._user_names[user],
            shop=self._shop_names[self._users.shop[user]],
            time=ts[order].view("datetime64[ns]"),
        )

    def respond(
        self, p: int, visits: Visits, shown: np.ndarray, rng: np.random.Generator
    ) -> Outcome:
        """What each visit buys and clicks given ``shown`` (V, k) plan indices, -1 = empty
        (model in the module docstring); purchases join the habit history."""
        self._check_month(p, self._p, "respond")
        shown = np.asarray(shown, dtype=np.int64)
        if shown.ndim != 2 or len(shown) != len(visits.user):
            raise ValueError(f"shown must be (V={len(visits.user)}, k), got {shown.shape}")
        n, k = shown.shape
        u_buy, u_click = rng.random(n), rng.random((n, k))
        col = self._shown_columns(shown)
        item = np.full(n, -1, dtype=np.int64)
        click_p = np.zeros((n, k))
        for lo in range(0, n, CHUNK):
            hi = min(lo + CHUNK, n)
            item[lo:hi], click_p[lo:hi] = self._respond_chunk(
                visits.user[lo:hi], col[lo:hi], u_buy[lo:hi]
            )
        live = self._month.live
        bought = np.where(item >= 0, live[np.maximum(item, 0)], -1)  # world item
        self._bought_add(visits.user[item >= 0], bought[item >= 0])
        hit = (col >= 0) & (col == item[:, None]) & (item[:, None] >= 0)
        clicked = (u_click < click_p) | hit
        plan_item = np.where(bought >= 0, self.plan_index[np.maximum(bought, 0)], -1)
        return Outcome(item=plan_item, from_rec=hit.any(axis=1), clicked=clicked)

    def organic(self, p: int, rng: np.random.Generator | None = None) -> tuple[Visits, Outcome]:
        """Month ``p`` with nothing shown (``shown`` of width 0); by default the choices
        come from the world's own stream ``[seed, 7, p]``."""
        visits = self.visits(p)
        rng = np.random.default_rng([self.cfg.seed, _ORGANIC_STREAM, p]) if rng is None else rng
        shown = np.full((len(visits.user), 0), -1, dtype=np.int64)
        return visits, self.respond(p, visits, shown, rng)

    def record(self, user: np.ndarray, item: np.ndarray) -> None:
        """Add purchases made outside :meth:`respond` (global users, plan items; -1 skipped)
        to the habit history."""
        user, item = np.asarray(user, dtype=np.int64), np.asarray(item, dtype=np.int64)
        keep = item >= 0
        self._bought_add(user[keep], self._world_of[item[keep]])

    def true_top(self, p: int, users: np.ndarray, k: int) -> np.ndarray:
        """(V, k) plan indices: each user's ``k`` highest-utility launched items in month
        ``p`` (taste + month bias + habit, no influence), best first; -1 pads."""
        self._check_month(p, self._p, "true_top")
        users = np.asarray(users, dtype=np.int64)
        live = self._month.live
        kk = min(k, len(live))
        out = np.full((len(users), k), -1, dtype=np.int64)
        if kk == 0:
            return out
        for lo in range(0, len(users), CHUNK):
            hi = min(lo + CHUNK, len(users))
            util = self._utility(users[lo:hi]) + self._habit(users[lo:hi])
            top = np.argpartition(-util, kk - 1, axis=1)[:, :kk]
            order = np.argsort(-np.take_along_axis(util, top, axis=1), axis=1, kind="stable")
            out[lo:hi, :kk] = self.plan_index[live[np.take_along_axis(top, order, axis=1)]]
        return out

    # --- internals -------------------------------------------------------------------
    def _check_month(self, p: int, expected: int, what: str) -> None:
        if not 0 <= p < self.cfg.n_periods:
            raise ValueError(f"{what}({p}): month must lie in [0, {self.cfg.n_periods})")
        if p != expected:
            now = "no month yet" if self._p < 0 else f"month {self._p}"
            raise ValueError(
                f"{what}({p}) out of order: the world is at {now}; call visits(p) once per "
                f"month in order 0, 1, 2, ... and respond/true_top for the current month"
            )

    def _shown_columns(self, shown: np.ndarray) -> np.ndarray:
        """Shown plan indices as columns of the month's live items; -1 for empty, unknown
        or not yet launched slots."""
        pos = np.full(self.cfg.n_items + 1, -1, dtype=np.int64)  # world item -> live column
        pos[self._month.live] = np.arange(len(self._month.live))
        valid = (shown >= 0) & (shown < self.cfg.n_items)
        world = np.where(valid, self._world_of[np.clip(shown, 0, self.cfg.n_items - 1)], -1)
        return pos[world]  # pos[-1] is the trailing -1

    def _utility(self, users: np.ndarray) -> np.ndarray:
        """(users x live) taste . vec + month bias, float64."""
        live = self._month.live
        util = self._taste[users] @ self._cat.vec[live].T + self._month.bias[live]
        return util.astype(np.float64)

    def _habit(self, users: np.ndarray) -> np.ndarray:
        """(users x live) log(1 + past purchases), 0 for out-of-season seasonal items."""
        live = self._month.live
        habit = np.log1p(self._bought[np.ix_(users, live)].astype(np.float64))
        habit[:, self._month.cat_off[self._cat.category[live]]] = 0.0
        return habit

    def _respond_chunk(
        self, users: np.ndarray, col: np.ndarray, u_buy: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(live column bought or -1, click probability per slot) for a chunk of visits."""
        n, k = col.shape
        util = self._utility(users)
        base = _logsumexp(util)
        rows = np.repeat(np.arange(n), k)
        on = col.ravel() >= 0
        boost = np.zeros_like(util)
        boost[rows[on], col.ravel()[on]] = self.influence  # duplicates count once
        logit = util + self._habit(users) + boost
        full = np.concatenate([logit, (base + self.leave_logit)[:, None]], axis=1)
        full = np.exp(full - full.max(axis=1, keepdims=True))
        cum = np.cumsum(full, axis=1)
        pick = (cum < (u_buy * cum[:, -1])[:, None]).sum(axis=1)
        pick = np.minimum(pick, full.shape[1] - 1)
        item = np.where(pick < logit.shape[1], pick, -1)
        click_p = np.zeros((n, k))
        if k:
            z = np.take_along_axis(logit, np.maximum(col, 0), axis=1)
            click_p = np.where(col >= 0, _sigmoid(z - base[:, None] + np.log(k)), 0.0)
        return item, click_p

    def _bought_add(self, user: np.ndarray, world_item: np.ndarray) -> None:
        np.add.at(self._bought, (user, world_item), 1)


def _names(
    cfg: SyntheticConfig, shop: np.ndarray, local: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, shop, item, category) names, formatted exactly as ``read``'s events table."""
    sw = max(2, len(str(cfg.n_shops - 1)))
    uw = max(5, len(str(int(np.bincount(shop).max()) - 1)))
    iw = max(5, len(str(cfg.n_items - 1)))
    cw = max(2, len(str(cfg.n_categories - 1)))
    users = np.array([f"s{s:0{sw}d}_u{u:0{uw}d}" for s, u in zip(shop, local, strict=True)])
    return (
        users.astype(object),
        np.array([f"shop_{s:0{sw}d}" for s in range(cfg.n_shops)], dtype=object),
        np.array([f"i{i:0{iw}d}" for i in range(cfg.n_items)], dtype=object),
        np.array([f"cat_{c:0{cw}d}" for c in range(cfg.n_categories)], dtype=object),
    )


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp."""
    m = x.max(axis=1)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=1))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))
