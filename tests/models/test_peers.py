"""The ``implicit`` peers as fedcl models (fedcl/models/peers*.py): the same scores as the
library's own ``recommend``, state that survives a state dict, zeros for unknown users, and a
clear error without the library. implicit is a dev dependency: these tests need it."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from implicit.cpu.als import AlternatingLeastSquares
from implicit.nearest_neighbours import BM25Recommender
from omegaconf import OmegaConf
from scipy.sparse import csr_matrix

from fedcl.config import load_config, schema_of
from fedcl.data.interactions import Interactions
from fedcl.errors import ConfigError
from fedcl.models.peers import IMPLICIT_PIN, ImplicitPeer
from fedcl.models.peers_als import ImplicitALS, ImplicitALSConfig
from fedcl.models.peers_knn import ImplicitItemKNN, ImplicitItemKNNConfig

N_USERS, N_ITEMS = 31, 19  # distinct sizes: a table sized by the user count shows in its shape
SEEN = 27  # users 0..26 buy; 27..30 never do
ALS_OPTIONS = {"factors": 6, "regularization": 0.05, "alpha": 2.0, "iterations": 5}
KNN_OPTIONS = {"K": 5, "K1": 100.0, "B": 0.8}
BUILDERS: dict[str, Callable[..., ImplicitPeer]] = {
    "als": lambda u, i: ImplicitALS(u, i, **ALS_OPTIONS),
    "knn": lambda u, i: ImplicitItemKNN(u, i, **KNN_OPTIONS),
}
MODELS = list(BUILDERS)


def purchases(seed: int, n: int = 300, n_users: int = N_USERS, n_items: int = N_ITEMS):
    """``n`` random purchases of users < SEEN (repeats included), one second apart."""
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, SEEN, (n,), generator=g)
    items = torch.randint(0, N_ITEMS, (n,), generator=g)
    times = torch.arange(n, dtype=torch.long) + 1_000_000 * (seed + 1)
    return Interactions(users, items, times, n_users, n_items)


def build(name: str, seed: int = 0, n_users: int = N_USERS, n_items: int = N_ITEMS):
    torch.manual_seed(seed)  # as fedcl does before it builds a model
    return BUILDERS[name](n_users, n_items)


def observed(name: str, seed: int = 0) -> ImplicitPeer:
    model = build(name, seed)
    model.observe(purchases(1))
    return model


def reference(name: str, counts, seed: int):
    """implicit's own model, fitted as the fedcl model fits it."""
    if name == "als":
        ref = AlternatingLeastSquares(**ALS_OPTIONS, num_threads=1, random_state=seed)
    else:
        ref = BM25Recommender(**KNN_OPTIONS, num_threads=1)
    with warnings.catch_warnings():  # BM25Recommender's own COO -> CSR conversion
        warnings.filterwarnings("ignore", "Method expects CSR input")
        ref.fit(counts, show_progress=False)
    return ref


def all_users() -> torch.Tensor:
    return torch.arange(N_USERS)


@pytest.mark.parametrize("name", MODELS)
def test_scores_are_implicits_own_recommend_for_seen_users(name):
    model = observed(name, seed=3)
    counts = model.counts_matrix()
    ref = reference(name, counts, seed=3)
    scores = model.score_all(all_users())
    assert scores.shape == (N_USERS, N_ITEMS) and scores.dtype == torch.float32
    for user in (0, 4, 26):
        ids, ref_scores = ref.recommend(
            user, counts[user], N=N_ITEMS, filter_already_liked_items=False
        )
        ours = scores[user].double().numpy()
        np.testing.assert_allclose(ours[ids], ref_scores, rtol=1e-5, atol=1e-5)
        # The same ranking: implicit's order sorts our scores too (ties aside).
        assert np.all(np.diff(ours[ids]) <= 1e-5)


def test_als_factors_are_implicits_and_the_seed_is_torchs():
    model = observed("als", seed=5)
    assert model.seed == 5
    ref = reference("als", model.counts_matrix(), seed=5)
    np.testing.assert_array_equal(model.item_factors.numpy(), ref.item_factors)
    np.testing.assert_array_equal(model.user_factors[:SEEN].numpy(), ref.user_factors[:SEEN])


def test_knn_similarity_is_implicits():
    model = observed("knn")
    ref = reference("knn", model.counts_matrix(), seed=0).similarity.toarray()
    ours = csr_matrix(
        (model.item_sim_values.numpy(), model.item_sim_items.numpy(), model.item_sim_ptr.numpy()),
        shape=(N_ITEMS, N_ITEMS),
    ).toarray()
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_counts_accumulate_and_each_window_refits_on_all_events(name):
    first, second = purchases(1), purchases(2)
    model = build(name)
    model.observe(first)
    model.observe(second)
    at_once = build(name)
    at_once.observe(first.concat(second))
    assert float(model.user_counts_values.sum()) == len(first) + len(second)
    torch.testing.assert_close(model.score_all(all_users()), at_once.score_all(all_users()))


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip_gives_identical_scores(name):
    model = observed(name)
    model.observe(purchases(2))
    fresh = build(name, seed=9)  # another seed: nothing may come from the constructor
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.score_all(all_users()), model.score_all(all_users()))
    # As a shop's state store does it (fedcl/learner.py): a small model, grown, then loaded.
    small = build(name, seed=9, n_users=3, n_items=2)
    small.grow(N_USERS, N_ITEMS)
    small.load_state_dict(model.private_state(), strict=False)
    assert torch.equal(small.score_all(all_users()), model.score_all(all_users()))


@pytest.mark.parametrize("name", MODELS)
def test_unknown_users_score_zeros(name):
    model = build(name)
    assert torch.equal(model.score_all(all_users()), torch.zeros(N_USERS, N_ITEMS))  # unfitted
    model.observe(purchases(1))
    scores = model.score_all(all_users())
    assert torch.equal(scores[SEEN:], torch.zeros(N_USERS - SEEN, N_ITEMS))
    assert (scores[:SEEN] != 0).any(dim=1).all()
    model.grow(N_USERS + 4, N_ITEMS + 2)  # users/items that arrive with the next window
    grown = model.score_all(torch.arange(N_USERS + 4))
    assert grown.shape == (N_USERS + 4, N_ITEMS + 2)
    assert torch.equal(grown[N_USERS:], torch.zeros(4, N_ITEMS + 2))
    assert torch.equal(grown[:, N_ITEMS:], torch.zeros(N_USERS + 4, 2))
    assert torch.equal(grown[:N_USERS, :N_ITEMS], scores)
    items = torch.tensor([0, 5, N_ITEMS + 1, 3])
    users = torch.tensor([0, 1, 2, N_USERS + 3])
    torch.testing.assert_close(model.score(users, items), grown[users, items])


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_scores_and_nothing_is_shared(name):
    a, b = observed(name, seed=4), observed(name, seed=4)
    assert torch.equal(a.score_all(all_users()), b.score_all(all_users()))
    assert not a.trainable
    assert a.shared_state() == {}  # a federation never exchanges or averages any of it
    assert set(a.private_state()) == set(a.state_dict())


def test_als_seed_changes_the_fit():
    a, b = observed("als", seed=4), observed("als", seed=5)
    assert not torch.equal(a.item_factors, b.item_factors)


@pytest.mark.parametrize("name", MODELS)
def test_a_clear_error_without_implicit(name, monkeypatch):
    for module in [m for m in sys.modules if m == "implicit" or m.startswith("implicit.")]:
        monkeypatch.setitem(sys.modules, module, None)  # None: "import implicit" fails
    model = build(name)
    with pytest.raises(ImportError, match=f"pip install {IMPLICIT_PIN}"):
        model.observe(purchases(1))


def test_fedcl_imports_without_implicit():
    code = (
        "import sys; sys.modules['implicit'] = None\n"
        "import fedcl.models.peers_als, fedcl.models.peers_knn, fedcl.config\n"
        "fedcl.config.register()\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    ("yaml_name", "config_cls", "model_cls"),
    [
        ("implicit_als", ImplicitALSConfig, ImplicitALS),
        ("implicit_itemknn", ImplicitItemKNNConfig, ImplicitItemKNN),
    ],
)
def test_the_yaml_registers_the_model(yaml_name, config_cls, model_cls):
    assert schema_of("model", yaml_name) is config_cls
    config_cls().check("model")
    model = instantiate(OmegaConf.structured(config_cls), n_users=5, n_items=9)
    assert isinstance(model, model_cls) and (model.n_users, model.n_items) == (5, 9)
    cfg, _ = load_config(["mode=centralized", f"model={yaml_name}", "continual=naive"])
    assert isinstance(cfg.model, config_cls)


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        (ImplicitALSConfig(factors=0), "model.factors"),
        (ImplicitALSConfig(alpha=0.0), "model.alpha"),
        (ImplicitALSConfig(iterations=0), "model.iterations"),
        (ImplicitItemKNNConfig(K=0), "model.K"),
        (ImplicitItemKNNConfig(B=1.5), "model.B"),
    ],
)
def test_check_names_the_bad_field(cfg, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg.check("model")
