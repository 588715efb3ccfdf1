"""Choose the item-item models' settings on fedcl's validation split (``eval.on=validation``:
each window's test part untouched), centralized Online Retail, by forward NDCG@10 ("new";
the re-buy blend ``repeat`` by the repeat variant's forward NDCG@10). Coordinate search: one
setting at a time from the defaults, the best kept.

    python benchmarks/tune_itemitem.py [--out outputs/tune_itemitem]

Writes ``<out>/results.md``: every setting tried with its validation figures, and the choice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "simulations"))
from common import pick, run_grid  # noqa: E402

COMMON = ["mode=centralized", "continual=naive", "eval.on=validation", "eval.n_boot=0"]
#: (model, setting, values), searched in this order.
AXES = [
    ("itemitem", "model.k", [50, 200, 1000, 4000]),
    ("itemitem", "model.alpha", [0.3, 0.5, 0.7, 0.9]),
    ("itemitem", "model.shrink", [0, 10, 100]),
    ("itemitem", "model.decay", [0.5, 0.8, 1.0]),
    ("ease", "model.l2", [10, 100, 500, 2000]),
    ("ease", "model.k", [200, 1000, 4000]),
    ("ease", "model.decay", [0.3, 0.5, 0.8, 1.0]),
]
REPEAT = [0.0, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/tune_itemitem"))
    args = parser.parse_args()
    chosen: dict[str, dict[str, str]] = {"itemitem": {}, "ease": {}}
    lines = [
        "| model | setting | value | forward (val) | repeat forward (val) |",
        "|---|---|---|---|---|",
    ]

    def score(model: str, extra: dict[str, str], key: str) -> dict[str, float]:
        overrides = [f"model={model}", *(f"{k}={v}" for k, v in extra.items())]
        label = " ".join(overrides)
        doc = run_grid(args.out, {label: overrides}, [0], COMMON)[label][0]
        fwd, rep = pick(doc, "continual.forward"), pick(doc, "continual_repeat.forward")
        lines.append(f"| {model} | {key} | {extra.get(key)} | {fwd:.4f} | {rep:.4f} |")
        return {"new": fwd, "repeat": rep}

    for model, key, values in AXES:
        results = {v: score(model, {**chosen[model], key: str(v)}, key) for v in values}
        chosen[model][key] = str(max(values, key=lambda v: results[v]["new"]))
    for model in chosen:
        results = {r: score(model, {**chosen[model], "model.repeat": str(r)}, "model.repeat")
                   for r in REPEAT}  # fmt: skip
        chosen[model]["model.repeat"] = str(max(REPEAT, key=lambda r: results[r]["repeat"]))
    text = ["# Item-item settings chosen on validation\n", *lines, ""]
    for model, settings in chosen.items():
        text.append(f"- {model}: " + " ".join(f"{k}={v}" for k, v in settings.items()))
    (args.out / "results.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
