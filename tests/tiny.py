"""A tiny synthetic stream shared by the tests: 3 shops x 3 monthly windows, trains in a
second. MF with replay, named explicitly (the project's default model may change)."""

TINY = [
    "data=synthetic",
    "data.n_shops=3",
    "data.n_users=150",
    "data.n_items=80",
    "data.n_periods=3",
    "data.shops.min_users=5",
    "train.epochs=1",
    "train.batch_size=256",
    "model=mf",
    "model.dim=8",
    "continual=replay",
]
