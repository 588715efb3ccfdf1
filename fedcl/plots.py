"""Plots of a run: the R heatmap and per-window curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _array(r: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in r], dtype=float)


def plot_run(doc: dict, out: Path) -> None:
    """``r_matrix.png`` (heatmap) and ``windows.png`` (diagonal, forward, last row)."""
    out.mkdir(parents=True, exist_ok=True)
    r = _array(doc["r_matrix"])
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(r, cmap="viridis", origin="upper")
    ax.set_xlabel("test window i")
    ax.set_ylabel("trained up to window t")
    ax.set_title(f"R[t][i] = {doc['metric']} ({doc['mode']})")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "r_matrix.png", dpi=100)
    plt.close(fig)

    n = r.shape[0]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(n), np.diag(r), marker="o", label="R[t][t] (just learned)")
    fwd = doc.get("forward_by_window")
    if fwd:  # the forward cells: the model after window t-1 on window t's events
        ax.plot(range(1, len(fwd) + 1), [np.nan if v is None else v for v in fwd], marker="s",
                label="forward (model of t-1 on window t)")  # fmt: skip
    elif n > 1 and r.shape[1] > 1:
        ax.plot(range(1, n), [r[t, t + 1] for t in range(n - 1)], marker="s",
                label="R[t-1][t] (next window)")  # fmt: skip
    ax.plot(range(r.shape[1]), r[-1], marker="^", label="R[T-1][i] (after the last window)")
    ax.set_xlabel("window")
    ax.set_ylabel(doc["metric"])
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "windows.png", dpi=100)
    plt.close(fig)
