"""A synthetic purchase stream with shops, seasons, launches, drift and re-buys.

Generative model (numpy, vectorised over users and events; loops over months and chunks):

* Items have a latent vector ``category offset + noise``, a category, a log-popularity,
  a base price and a launch period (``new_items_per_period`` of the catalogue launches
  each month; nothing is bought before its launch; new items get a short novelty boost).
* Users belong to one shop (Zipf-like shop sizes). A taste is
  ``sqrt(r) * shop mean + sqrt(1 - r) * own noise`` with ``r = regional_strength`` and
  drifts as an AR(1) walk of strength ``drift`` per period (shop-shared + own innovation).
  Some users join after the first month; activity varies per user (Gamma x Poisson).
* The k-th of ``n_seasonal_categories`` random categories is in season in periods ``p``
  with ``p % season_length == k % season_length`` (``seasonal_phase``): ``+seasonal_boost``
  to its logits, ``-offseason_penalty`` out of season (bought heavily in its season, rarely
  outside). So the taste of the current month is not that of the next one, and it comes
  back ``season_length`` periods later: forgetting matters.
* A share ``seasonal_users`` of the users are seasonal shoppers, loyal to one seasonal
  category (``+seasonal_affinity`` to its logits): they shop mostly in its season
  (``offseason_activity`` times their activity outside it) and return every time it comes
  back. A model that fine-tunes on the newest month pushes their category down while it is
  out of season, and ranks it badly for them when they return: what replay should prevent.
* Each event is, with ``repeat_prob``, a re-buy of an item the user bought in an earlier
  period (chosen in proportion to past purchases; an out-of-season seasonal item is not
  re-bought), otherwise a draw from ``softmax(taste . item + season + popularity)`` over
  launched items (per-user cumulative sums + one ``searchsorted``, chunked over users).

Who buys when (users, activity, timestamps, quantities) comes from random streams that
the choice knobs do not touch, so sweeping e.g. ``seasonal_boost`` keeps those fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedcl.data.config import DataConfig, ShopsConfig, WindowsConfig
from fedcl.data.schema import ITEM, REASON, ROW, SHOP, TIME, USER, DataError, SourceFrame
from fedcl.data.sources.softmax_sampling import sample_softmax

_START = np.datetime64("2023-01", "M")  # first period (calendar month)
_NOVELTY = 1.0  # logit boost of an item in its launch period, halving every period after
_MIN_SHOP_USERS = 40  # every shop gets at least this many users (when n_users allows)
_LATE_JOIN = 0.25  # fraction of users whose first active period is after the first
_POP_STD = 0.7  # std of item log-popularity
_CAT_W = 0.6  # weight of the category offset in item vectors


@dataclass
class SyntheticConfig(DataConfig):
    """Knobs of the synthetic stream; defaults are the reference recurring-season scenario.

    The defaults (8 months; four seasonal categories, each in season every fourth month;
    70% of the customers loyal to one of them, back each time it returns) make plain
    fine-tuning of BPR-MF forget measurably (docs/RESULTS.md, "Continual methods").
    ``seasonal_users=0, events_per_user_period=4, repeat_prob=0.3, n_users=1500,
    seasonal_boost=2`` give the earlier, mildly seasonal stream exactly.
    """

    name: str = "synthetic"
    _target_: str = "fedcl.data.sources.synthetic.read"
    seed: int = 0  # root of all random streams (numpy default_rng([seed, ...]))
    n_shops: int = 5  # number of shops (clients); sizes are Zipf-like
    n_users: int = 3000  # users in total, each in exactly one shop
    n_items: int = 600  # catalogue size shared by all shops
    n_categories: int = 12  # item categories ("cat_00", ...)
    n_periods: int = 8  # calendar months starting 2023-01-01
    #: Mean events of a joined user in a month (a seasonal shopper: in its season).
    events_per_user_period: float = 8.0
    season_length: int = 4  # seasonal categories recur with this period (in months)
    n_seasonal_categories: int = 4  # categories that are only popular in their season
    seasonal_boost: float = 1.0  # logit bonus of a seasonal category in its season
    offseason_penalty: float = 1.0  # logit malus of a seasonal category out of season
    seasonal_users: float = 0.7  # share of users loyal to one seasonal category
    seasonal_affinity: float = 3.0  # their logit bonus for items of that category
    offseason_activity: float = 0.1  # their activity out of its season (x; 1 in season)
    new_items_per_period: float = 0.05  # fraction of the catalogue launched each month
    drift: float = 0.2  # AR(1) innovation weight of tastes per month (0 = static)
    regional_strength: float = 0.5  # share of taste variance common to a shop (0..1)
    repeat_prob: float = 0.1  # probability an event re-buys an earlier-bought item
    dim: int = 8  # latent dimension of tastes and items
    shops: ShopsConfig = field(default_factory=lambda: ShopsConfig(min_users=20, min_events=50))
    windows: WindowsConfig = field(default_factory=lambda: WindowsConfig(period="month"))

    def check(self, key: str = "data") -> None:
        """The shared data checks, then the generator's own."""
        super().check(key)
        _check(self, key)


#: This source's config schema (conf/data/synthetic.yaml: ``_target_`` is :func:`read`).
SCHEMA = SyntheticConfig


def _check(cfg: SyntheticConfig, key: str = "data") -> None:
    bad = []
    if cfg.n_shops < 1 or cfg.n_users < cfg.n_shops:
        bad.append("need 1 <= n_shops <= n_users")
    if cfg.n_items < 1 or cfg.n_categories < 1 or cfg.n_periods < 1 or cfg.dim < 1:
        bad.append("n_items, n_categories, n_periods and dim must be >= 1")
    if not 0 <= cfg.n_seasonal_categories <= cfg.n_categories or cfg.season_length < 1:
        bad.append("need 0 <= n_seasonal_categories <= n_categories and season_length >= 1")
    for name in ("repeat_prob", "regional_strength", "drift", "seasonal_users"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            bad.append(f"{name} must lie in [0, 1]")
    if cfg.events_per_user_period < 0 or cfg.new_items_per_period < 0:
        bad.append("events_per_user_period and new_items_per_period must be >= 0")
    if cfg.offseason_activity < 0:
        bad.append("offseason_activity must be >= 0")
    if cfg.seasonal_users > 0 and cfg.n_seasonal_categories == 0:
        bad.append("seasonal_users > 0 needs n_seasonal_categories >= 1")
    if bad:
        raise DataError(f"{key} (synthetic config): " + "; ".join(bad))


def shop_sizes(n_users: int, n_shops: int) -> np.ndarray:
    """Users per shop: a floor of a few dozen plus a Zipf(1) share of the rest."""
    floor = min(_MIN_SHOP_USERS, n_users // n_shops)
    weights = 1.0 / np.arange(1, n_shops + 1)
    extra = np.floor((n_users - floor * n_shops) * weights / weights.sum()).astype(np.int64)
    extra[0] += n_users - floor * n_shops - extra.sum()
    return floor + extra


def item_launch(cfg: SyntheticConfig) -> np.ndarray:
    """Launch period (0-based month) of each item; >= 10% of the catalogue exists at 0."""
    rng = np.random.default_rng([cfg.seed, 3])
    per = int(round(cfg.new_items_per_period * cfg.n_items))
    per = min(per, int(0.9 * cfg.n_items) // max(cfg.n_periods - 1, 1))
    launch = np.zeros(cfg.n_items, dtype=np.int64)
    later = np.repeat(np.arange(1, cfg.n_periods), per)
    launch[rng.permutation(cfg.n_items)[: len(later)]] = later
    return launch


def seasonal_phase(cfg: SyntheticConfig) -> np.ndarray:
    """Per category: ``-1`` if not seasonal, else the ``p % season_length`` it is in season."""
    rng = np.random.default_rng([cfg.seed, 4])
    seasonal = rng.choice(cfg.n_categories, cfg.n_seasonal_categories, replace=False)
    phase = np.full(cfg.n_categories, -1, dtype=np.int64)
    phase[seasonal] = np.arange(cfg.n_seasonal_categories) % cfg.season_length
    return phase


def seasonal_shoppers(cfg: SyntheticConfig) -> np.ndarray:
    """Per user (global index, users sorted by shop): its seasonal category, or ``-1``."""
    rng = np.random.default_rng([cfg.seed, 5])
    seasonal = np.flatnonzero(seasonal_phase(cfg) >= 0)
    loyal = rng.random(cfg.n_users) < cfg.seasonal_users
    if len(seasonal) == 0:
        return np.full(cfg.n_users, -1, dtype=np.int64)
    return np.where(loyal, seasonal[rng.integers(0, len(seasonal), cfg.n_users)], -1)


@dataclass
class _Catalogue:
    """The items: what they are, what they cost, when they launch, when they sell."""

    category: np.ndarray  # (n_items,) category index
    vec: np.ndarray  # (n_items, dim + n_seasonal) float32: latent vector | seasonal slot
    popularity: np.ndarray  # (n_items,) log-popularity
    base_price: np.ndarray  # (n_items,)
    launch: np.ndarray  # (n_items,) launch period
    phase: np.ndarray  # (n_categories,) see seasonal_phase


@dataclass
class _Customers:
    """The users, sorted by shop; ``taste`` drifts month by month."""

    sizes: np.ndarray  # (n_shops,) users per shop
    shop: np.ndarray  # (n_users,) shop index
    local: np.ndarray  # (n_users,) index within the shop
    taste: np.ndarray  # (n_users, dim)
    activity: np.ndarray  # (n_users,) multiplier of events_per_user_period
    join: np.ndarray  # (n_users,) first active period
    fav: np.ndarray  # (n_users,) seasonal category of a seasonal shopper, else -1
    affinity: np.ndarray  # (n_users, n_seasonal) float32: seasonal_affinity in fav's slot


@dataclass
class _Month:
    """What period ``p`` looks like: the categories in and out of season, item logits."""

    cat_in: np.ndarray  # (n_categories,) bool: in season
    cat_off: np.ndarray  # (n_categories,) bool: seasonal and out of season
    bias: np.ndarray  # (n_items,) float32 logit offset (popularity, season, novelty)
    live: np.ndarray  # indices of the launched items


class _History:
    """Past purchases (user, item), kept sorted by user (stable: in order of purchase)."""

    def __init__(self) -> None:
        self.user = np.empty(0, dtype=np.int64)
        self.item = np.empty(0, dtype=np.int64)

    def add(self, owner: np.ndarray, item: np.ndarray) -> None:
        order = np.argsort(np.concatenate([self.user, owner]), kind="stable")
        self.user = np.concatenate([self.user, owner])[order]
        self.item = np.concatenate([self.item, item])[order]


def read(cfg: SyntheticConfig) -> SourceFrame:
    """Generate the synthetic purchase stream described in the module docstring."""
    _check(cfg)
    # One stream for the catalogue and the users, drawn in this order: items, then users.
    rng = np.random.default_rng([cfg.seed, 0])
    catalogue = _catalogue(cfg, rng)
    customers = _customers(cfg, rng)
    _add_seasonal_slots(cfg, catalogue, customers)
    history = _History()
    parts: list[tuple[np.ndarray, ...]] = []
    for p in range(cfg.n_periods):
        # Separate streams per month: who buys when (rp) and what (rc), so that a knob
        # sweep (seasonal_boost, repeat_prob, ...) keeps users, activity and timestamps.
        rp = np.random.default_rng([cfg.seed, 1, p])
        rc = np.random.default_rng([cfg.seed, 2, p])
        if p > 0:
            _drift(cfg, customers, rp)
        month = _month(cfg, catalogue, p)
        owner, ts, qty, noise = _month_events(cfg, customers, month, p, rp)
        item = _choose_items(cfg, catalogue, customers, month, history, owner, rc)
        price = np.maximum(np.round(catalogue.base_price[item] * noise, 2), 0.01)
        parts.append((owner, item, ts, qty, price))
        history.add(owner, item)
    frame = _events_table(cfg, catalogue, customers, parts)
    return SourceFrame(frame=frame, raw=pd.DataFrame(index=frame.index), source=cfg.name)


def _catalogue(cfg: SyntheticConfig, rng: np.random.Generator) -> _Catalogue:
    """Items: categories, latent vectors, popularity and prices (from ``rng``), launches
    and seasons (their own streams)."""
    n_items, dim = cfg.n_items, cfg.dim
    category = rng.permutation(np.arange(n_items) % cfg.n_categories)
    cat_vec = rng.normal(size=(cfg.n_categories, dim))
    item_vec = (_CAT_W * cat_vec[category] + 0.7 * rng.normal(size=(n_items, dim))).astype(
        np.float32
    )
    popularity = rng.normal(0.0, _POP_STD, size=n_items)
    cat_price = rng.lognormal(1.5, 0.7, size=cfg.n_categories)
    base_price = cat_price[category] * rng.lognormal(0.0, 0.4, size=n_items)
    return _Catalogue(
        category=category,
        vec=item_vec,
        popularity=popularity,
        base_price=base_price,
        launch=item_launch(cfg),
        phase=seasonal_phase(cfg),
    )


def _customers(cfg: SyntheticConfig, rng: np.random.Generator) -> _Customers:
    """Users and their shops (users sorted by shop; ids local to a shop), tastes,
    activity and first active period (from ``rng``), seasonal loyalty (its own stream)."""
    sizes = shop_sizes(cfg.n_users, cfg.n_shops)
    user_shop = np.repeat(np.arange(cfg.n_shops), sizes)
    local = np.arange(cfg.n_users) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    r = cfg.regional_strength
    shop_mean = rng.normal(size=(cfg.n_shops, cfg.dim))
    own = rng.normal(size=(cfg.n_users, cfg.dim))
    taste = _taste_scale(cfg) * (np.sqrt(r) * shop_mean[user_shop] + np.sqrt(1 - r) * own)
    activity = rng.gamma(1.5, 1 / 1.5, size=cfg.n_users)
    late = rng.random(cfg.n_users) < _LATE_JOIN
    join = np.where(late, rng.integers(1, max(cfg.n_periods, 2), size=cfg.n_users), 0)
    return _Customers(
        sizes=sizes,
        shop=user_shop,
        local=local,
        taste=taste,
        activity=activity,
        join=join,
        fav=seasonal_shoppers(cfg),
        affinity=np.zeros((cfg.n_users, 0), dtype=np.float32),
    )


def _taste_scale(cfg: SyntheticConfig) -> float:
    return 1.5 / np.sqrt(cfg.dim)


def _add_seasonal_slots(cfg: SyntheticConfig, catalogue: _Catalogue, users: _Customers) -> None:
    """Seasonal shoppers: an extra latent dimension per seasonal category, so that the
    affinity is a (user x item) logit term that the chunked sampler computes for free."""
    category = catalogue.category
    seasonal = np.flatnonzero(catalogue.phase >= 0)
    slot = np.full(cfg.n_categories, -1, dtype=np.int64)
    slot[seasonal] = np.arange(len(seasonal))
    item_aff = np.zeros((cfg.n_items, len(seasonal)), dtype=np.float32)
    is_seasonal = slot[category] >= 0
    item_aff[np.flatnonzero(is_seasonal), slot[category][is_seasonal]] = 1.0
    user_aff = np.zeros((cfg.n_users, len(seasonal)), dtype=np.float32)
    loyal = np.flatnonzero(users.fav >= 0)
    user_aff[loyal, slot[users.fav[loyal]]] = cfg.seasonal_affinity
    catalogue.vec = np.concatenate([catalogue.vec, item_aff], axis=1)
    users.affinity = user_aff


def _drift(cfg: SyntheticConfig, users: _Customers, rp: np.random.Generator) -> None:
    """One month of AR(1) taste drift: shop-shared + individual innovation."""
    r = cfg.regional_strength
    shared = rp.normal(size=(cfg.n_shops, cfg.dim))[users.shop]
    own = rp.normal(size=(cfg.n_users, cfg.dim))
    innov = _taste_scale(cfg) * (np.sqrt(r) * shared + np.sqrt(1 - r) * own)
    users.taste = np.sqrt(1 - cfg.drift**2) * users.taste + cfg.drift * innov


def _month(cfg: SyntheticConfig, catalogue: _Catalogue, p: int) -> _Month:
    """Seasons, novelty and the launched items of period ``p``."""
    phase, category = catalogue.phase, catalogue.category
    cat_in = phase == p % cfg.season_length
    cat_off = (phase >= 0) & ~cat_in
    age = p - catalogue.launch
    bias = (
        catalogue.popularity
        + cfg.seasonal_boost * cat_in[category]
        - cfg.offseason_penalty * cat_off[category]
        + _NOVELTY * 0.5 ** np.maximum(age, 0)
    ).astype(np.float32)
    return _Month(cat_in=cat_in, cat_off=cat_off, bias=bias, live=np.flatnonzero(age >= 0))


def _month_events(
    cfg: SyntheticConfig, users: _Customers, month: _Month, p: int, rp: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Who buys in period ``p`` and when: (owner sorted by user, timestamp in ns,
    quantity, price noise), all drawn from ``rp``."""
    fav = users.fav
    away = (fav >= 0) & ~month.cat_in[np.maximum(fav, 0)]  # seasonal shoppers out of season
    rate = users.activity * np.where(away, cfg.offseason_activity, 1.0)
    counts = rp.poisson(cfg.events_per_user_period * rate * (users.join <= p))
    owner = np.repeat(np.arange(cfg.n_users), counts)  # sorted by user
    n = len(owner)
    t0 = (_START + p).astype("datetime64[ns]").astype(np.int64)
    t1 = (_START + p + 1).astype("datetime64[ns]").astype(np.int64)
    ts = t0 + (rp.random(n) * (t1 - t0)).astype(np.int64)
    qty = rp.geometric(0.6, size=n)
    noise = rp.lognormal(0, 0.03, size=n)
    return owner, ts, qty, noise


def _choose_items(
    cfg: SyntheticConfig,
    catalogue: _Catalogue,
    users: _Customers,
    month: _Month,
    history: _History,
    owner: np.ndarray,
    rc: np.random.Generator,
) -> np.ndarray:
    """The item of each event: a re-buy from the user's history (not of an out-of-season
    item) with ``repeat_prob``, else a draw from the month's softmax, all from ``rc``."""
    n = len(owner)
    item = np.full(n, -1, dtype=np.int64)
    hist_n = np.bincount(history.user, minlength=cfg.n_users)
    hist_start = np.cumsum(hist_n) - hist_n
    rep = np.flatnonzero((rc.random(n) < cfg.repeat_prob) & (hist_n[owner] > 0))
    pick = hist_start[owner[rep]] + (rc.random(len(rep)) * hist_n[owner[rep]]).astype(int)
    item[rep] = history.item[pick]
    item[rep[month.cat_off[catalogue.category[item[rep]]]]] = -1  # no re-buys out of season
    new = item < 0
    taste = np.concatenate([users.taste.astype(np.float32), users.affinity], axis=1)
    live = month.live
    item[new] = live[sample_softmax(rc, taste, catalogue.vec[live], month.bias[live], owner[new])]
    return item


def _events_table(
    cfg: SyntheticConfig,
    catalogue: _Catalogue,
    users: _Customers,
    parts: list[tuple[np.ndarray, ...]],
) -> pd.DataFrame:
    """The months' events in time order, with readable names, in the event schema."""
    owner, item, ts, qty, price = (np.concatenate(c) for c in zip(*parts, strict=True))
    order = np.argsort(ts, kind="stable")
    owner, item, ts, qty, price = owner[order], item[order], ts[order], qty[order], price[order]

    sw = max(2, len(str(cfg.n_shops - 1)))
    uw = max(5, len(str(int(users.sizes.max()) - 1)))
    iw = max(5, len(str(cfg.n_items - 1)))
    cw = max(2, len(str(cfg.n_categories - 1)))
    user_names = np.array(
        [f"s{s:0{sw}d}_u{u:0{uw}d}" for s, u in zip(users.shop, users.local, strict=True)],
        dtype=object,
    )
    shop_names = np.array([f"shop_{s:0{sw}d}" for s in range(cfg.n_shops)], dtype=object)
    item_names = np.array([f"i{i:0{iw}d}" for i in range(cfg.n_items)], dtype=object)
    cat_names = np.array([f"cat_{c:0{cw}d}" for c in range(cfg.n_categories)], dtype=object)
    n = len(owner)
    return pd.DataFrame(
        {
            USER: user_names[owner],
            ITEM: item_names[item],
            TIME: ts.view("datetime64[ns]"),
            SHOP: shop_names[users.shop[owner]],
            "event_type": np.full(n, "purchase", dtype=object),
            "quantity": qty.astype(np.int64),
            "price": price.astype(np.float64),
            "category": cat_names[catalogue.category[item]],
            ROW: np.arange(n, dtype=np.int64),
            REASON: np.full(n, "", dtype=object),
        }
    )
