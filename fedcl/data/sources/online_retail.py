"""The UCI Online Retail layout (one row per invoice line) mapped into the event schema.

Country is the shop, CustomerID the user, StockCode the item. Source-specific reasons:
``cancellation`` (invoice number starting with ``C``), ``return`` (negative quantity on a
non-cancellation line) and ``non_product`` (postage, fees, manual adjustments, vouchers).
Generic checks (missing customer, bad price, duplicates, ...) are left to validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from fedcl.data.config import DataConfig
from fedcl.data.schema import ITEM, REASON, ROW, SHOP, TIME, USER, SourceFrame
from fedcl.data.sources.fileio import read_table

COLUMNS = [
    "InvoiceNo", "StockCode", "Description", "Quantity",
    "InvoiceDate", "UnitPrice", "CustomerID", "Country",
]  # fmt: skip
LAYOUT = "UCI Online Retail CSV/Parquet with columns " + ",".join(COLUMNS)


def default_path() -> Path:
    """The complete Online Retail file shipped with fedcl (CC BY 4.0, see its README)."""
    return Path(str(resources.files("fedcl.data") / "online_retail" / "online_retail.csv.gz"))


@dataclass
class OnlineRetailConfig(DataConfig):
    name: str = "online_retail"
    reader: str = "fedcl.data.sources.online_retail:read"
    #: Stock codes that are not products (postage, discounts, fees, samples, manual lines).
    non_product_codes: list[str] = field(
        default_factory=lambda: [
            "POST",
            "DOT",
            "M",
            "m",
            "C2",
            "D",
            "S",
            "B",
            "BANK CHARGES",
            "AMAZONFEE",
            "CRUK",
            "PADS",
        ]  # fmt: skip
    )
    #: Stock-code prefixes that are not products (gift vouchers).
    non_product_prefixes: list[str] = field(default_factory=lambda: ["gift_"])
    #: strftime format of InvoiceDate; the spreadsheet export uses "%m/%d/%Y %H:%M".
    time_format: str | None = None


def read(cfg: OnlineRetailConfig) -> SourceFrame:
    """Read the file at ``cfg.path`` (default: the shipped one) into a SourceFrame."""
    path = Path(cfg.path) if cfg.path else default_path()
    raw = read_table(path, required=COLUMNS, layout=LAYOUT)
    raw = raw[COLUMNS]

    invoice = raw["InvoiceNo"].fillna("")
    code = raw["StockCode"].fillna("").str.strip()
    quantity = pd.to_numeric(raw["Quantity"], errors="coerce")
    price = pd.to_numeric(raw["UnitPrice"], errors="coerce")
    # CustomerID is written as a float ("17850.0"): normalise to the integer string.
    customer = raw["CustomerID"].str.strip().str.replace(r"\.0+$", "", regex=True)
    customer = customer.where(customer != "")
    when = pd.to_datetime(
        raw["InvoiceDate"], format=cfg.time_format or "ISO8601", errors="coerce"
    ).astype("datetime64[ns]")

    reason = pd.Series("", index=raw.index, dtype=object)
    non_product = code.isin(cfg.non_product_codes)
    for prefix in cfg.non_product_prefixes:
        non_product |= code.str.startswith(prefix)
    # Order matters: the first reason that applies is the one recorded.
    reason[invoice.str.upper().str.startswith("C")] = "cancellation"
    reason[(reason == "") & (quantity < 0)] = "return"
    reason[(reason == "") & non_product] = "non_product"

    frame = pd.DataFrame(
        {
            USER: customer,
            ITEM: code.where(code != ""),
            TIME: when,
            SHOP: raw["Country"].str.strip(),
            "event_type": "purchase",
            "quantity": quantity,
            "price": price,
            ROW: range(len(raw)),
            REASON: reason,
        }
    )
    return SourceFrame(frame=frame, raw=raw, source="online_retail")
