"""Readable text tables of a prepared dataset."""

from __future__ import annotations

import pandas as pd


def shop_window_table(report: dict, max_shops: int = 25) -> str:
    """Events per shop (rows) and window (columns), with users per shop."""
    rows = report["shop_window_events"]
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.columns = [f"w{c}" for c in frame.columns]
    frame.insert(0, "users", [report["per_shop"][s]["users"] for s in frame.index])
    frame.index.name = "shop"
    more = ""
    if len(frame) > max_shops:
        more = f"\n... and {len(frame) - max_shops} more shops (see report.json)"
        frame = frame.head(max_shops)
    return frame.to_string() + more
