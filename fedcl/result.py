"""What a run found, built the same way by every mode (centralized, local, federated) and
written by one report writer (:func:`fedcl.report.write_report`); the server checkpoint
stores it (:meth:`RunResult.to_json`, versioned)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from fedcl.errors import FedclError
from fedcl.evaluation import Cell

#: The version of :meth:`RunResult.to_json`; a checkpoint of another version is refused.
VERSION = 4  # 2: forward cells; 3: claims (the weight-growth bound's history); 4: privacy
#: R-matrix cells: ``[t][i][shop]`` (model after window t, test window i).
Grid = list[list[dict[str, Cell]]]
#: One evaluation of a model on every test window: ``{variant: [{shop: cell} per window]}``.
Row = dict[str, list[dict[str, Cell]]]
#: The forward cells of one model (after window t, on all of window t+1): ``{variant: {shop:
#: cell}}``.
ForwardCells = dict[str, dict[str, Cell]]


@dataclass
class RoundRow:
    """One line of ``rounds.csv``: a unit's training on a window (centralized, local), a
    federated round, or a federated evaluation (with the shops' fine-tuning cost)."""

    window: int
    round: int
    #: A shop, "pooled" (centralized), "federated" (a round) or "evaluate".
    unit: str
    #: Shops asked, replies kept, replies rejected (and whose: "shop_a;shop_b").
    shops: int = 1
    ok: int = 1
    rejected: int = 0
    rejected_shops: str = ""
    #: Updates scaled down to the round's norm bound, and whose; shops whose num-examples
    #: was capped (fedcl.federated.bounds).
    clipped: int = 0
    clipped_shops: str = ""
    capped_shops: str = ""
    #: Events new to the learner (centralized, local).
    events: int = 0
    examples: int = 0
    loss: float | None = None
    train_s: float = 0.0
    train_cpu_s: float = 0.0
    eval_s: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    #: Wall seconds of a federated round.
    round_s: float = 0.0
    #: Bytes the continual method holds (replay buffer, Fisher, teacher).
    memory_bytes: int = 0
    #: With ``federated.dp``: the cumulative epsilon after this round (at the run's delta).
    epsilon: float | None = None


@dataclass
class Rejection:
    """A shop reply the server did not use, and why."""

    window: int
    #: The training round (0: an evaluation).
    round: int
    kind: str  # "train" | "evaluate"
    shop: str
    node: int
    why: str


@dataclass
class RunResult:
    """Cells of every (t, i) per variant, the forward cells of every t, the untrained baseline
    row, the training log, what crossed the network and what was rejected."""

    cells: dict[str, Grid] = field(default_factory=dict)
    #: ``forward[variant][t][shop]``: the model after window t on all of window t+1.
    forward: dict[str, list[dict[str, Cell]]] = field(default_factory=dict)
    baseline: Row = field(default_factory=dict)
    rounds: list[RoundRow] = field(default_factory=list)
    memory_bytes: dict[str, int] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    #: Where a restarted server continued (window, round, server_round); [] = never.
    resumed_from: list[dict[str, int]] = field(default_factory=list)
    #: Each shop's largest num-examples claim so far (federated: the weight-growth bound).
    claims: dict[str, int] = field(default_factory=dict)
    #: With ``federated.dp``: the privacy ledger's report (metrics.json ``privacy``).
    privacy: dict[str, Any] | None = None

    def add_row(self, row: Row, forward: ForwardCells | None = None) -> None:
        """The evaluation after the next window: one R-matrix row per variant, and its forward
        cells (none after the last window)."""
        for v, cells in row.items():
            self.cells.setdefault(v, []).append(cells)
        for v, by_shop in (forward or {}).items():
            self.forward.setdefault(v, []).append(by_shop)

    def merge(self, other: RunResult) -> None:
        """Add another unit's shops (local mode: one result per shop)."""
        for v, grid in other.cells.items():
            mine = self.cells.setdefault(v, [[{} for _ in row] for row in grid])
            for t, row in enumerate(grid):
                for i, cell in enumerate(row):
                    mine[t][i].update(cell)
        for grids, theirs in ((self.baseline, other.baseline), (self.forward, other.forward)):
            for v, row in theirs.items():
                mine = grids.setdefault(v, [{} for _ in row])
                for i, cell in enumerate(row):
                    mine[i].update(cell)
        self.rounds.extend(other.rounds)
        self.memory_bytes.update(other.memory_bytes)
        self.bytes_up += other.bytes_up
        self.bytes_down += other.bytes_down
        self.rejected.extend(other.rejected)

    def shops_seen(self) -> set[str]:
        """Every shop some cell names."""
        rows = [*self.baseline.values(), *self.forward.values()]
        rows += [row for grid in self.cells.values() for row in grid]
        return {shop for row in rows for by_shop in row for shop in by_shop}

    def rejected_per_shop(self) -> dict[str, int]:
        return dict(sorted(Counter(r.shop for r in self.rejected).items()))

    # --- persistence ------------------------------------------------------------------
    def to_json(self) -> str:
        doc = asdict(self)
        doc["version"] = VERSION
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        doc: dict[str, Any] = json.loads(text)
        if doc.pop("version", None) != VERSION:
            raise FedclError(
                f"saved results are not of version {VERSION} (written by another fedcl): "
                "start the run in a new output directory"
            )
        known = {f.name for f in fields(RoundRow)}
        return cls(
            cells=doc["cells"],
            forward=doc["forward"],
            baseline=doc["baseline"],
            rounds=[RoundRow(**{k: v for k, v in r.items() if k in known}) for r in doc["rounds"]],
            memory_bytes=doc["memory_bytes"],
            bytes_up=int(doc["bytes_up"]),
            bytes_down=int(doc["bytes_down"]),
            rejected=[Rejection(**r) for r in doc["rejected"]],
            resumed_from=doc["resumed_from"],
            claims={k: int(v) for k, v in doc["claims"].items()},
            privacy=doc["privacy"],
        )
