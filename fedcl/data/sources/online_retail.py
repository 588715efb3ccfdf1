"""The UCI Online Retail layout (one row per invoice line) mapped into the event schema.

Country is the shop, CustomerID the user, StockCode the item. Source-specific reasons:
``cancellation`` (invoice number starting with ``C``), ``return`` (negative quantity on a
non-cancellation line) and ``non_product`` (postage, fees, manual adjustments, vouchers).
Generic checks (missing customer, bad price, duplicates, ...) are left to validation.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from pandas.arrays import ArrowStringArray

from fedcl.data.config import DataConfig
from fedcl.data.schema import ITEM, REASON, ROW, SHOP, TIME, USER, SourceFrame
from fedcl.data.sources.interning import Distinct, constant_text, map_distinct
from fedcl.data.sources.table_files import read_table

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
    _target_: str = "fedcl.data.sources.online_retail.read"
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


#: This source's config schema (conf/data/online_retail.yaml: ``_target_`` is :func:`read`).
SCHEMA = OnlineRetailConfig


#: Reasons the source gives, by code (0: none).
_REASONS = np.array(["", "cancellation", "return", "non_product"], dtype=object)


def _customer_ids(values: pd.Series) -> pd.Series:
    """CustomerID is written as a float ("17850.0"): normalise to the integer string."""
    customer = values.str.strip().str.replace(r"\.0+$", "", regex=True)
    return customer.where(customer != "")


def _stock_codes(values: pd.Series) -> pd.Series:
    return values.fillna("").str.strip()


def _items(values: pd.Series) -> pd.Series:
    code = _stock_codes(values)
    return code.where(code != "")


def _is_cancellation(values: pd.Series) -> np.ndarray:
    """The invoice number starts with "C": ``values.fillna("").str.upper().str.startswith("C")``."""
    if isinstance(values.array, ArrowStringArray):
        # pyarrow upper-cases code point by code point, and only "c" becomes "C".
        text = values.array.__arrow_array__()
        found = pc.fill_null(pc.or_(pc.starts_with(text, "C"), pc.starts_with(text, "c")), False)
        return np.asarray(found, dtype=bool)
    found = map_distinct(values, lambda s: s.fillna("").str.upper().str.startswith("C"))
    return found.to_numpy(dtype=bool)


def _times(values: pd.Series, time_format: str) -> pd.Series:
    return pd.to_datetime(values, format=time_format, errors="coerce").astype("datetime64[ns]")


def read(cfg: OnlineRetailConfig) -> SourceFrame:
    """Read the file at ``cfg.path`` (default: the shipped one) into a SourceFrame."""
    path = Path(cfg.path) if cfg.path else default_path()
    raw = read_table(path, required=COLUMNS, layout=LAYOUT)
    raw = raw[COLUMNS]

    def non_product(values: pd.Series) -> pd.Series:
        code = _stock_codes(values)
        found = code.isin(cfg.non_product_codes)
        for prefix in cfg.non_product_prefixes:
            found |= code.str.startswith(prefix)
        return found

    # Every step is element-wise and values repeat (invoices, stock codes, quantities,
    # prices, customers, invoice times, countries): each is done once per distinct value.
    # Unparseable numbers and times become NaN/NaT. The columns are independent: the
    # numbers and times are parsed in a second thread meanwhile (the heavy parts are
    # pyarrow and pandas kernels that release the GIL).
    to_number = partial(pd.to_numeric, errors="coerce")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedcl-read") as pool:
        quantity = pool.submit(map_distinct, raw["Quantity"], to_number)
        price = pool.submit(map_distinct, raw["UnitPrice"], to_number)
        when = pool.submit(
            map_distinct,
            raw["InvoiceDate"],
            partial(_times, time_format=cfg.time_format or "ISO8601"),
        )
        stock = Distinct(raw["StockCode"])
        item = stock.map(_items)
        other = stock.map(non_product).to_numpy(dtype=bool)
        customer = map_distinct(raw["CustomerID"], _customer_ids)
        shop = map_distinct(raw["Country"], lambda s: s.str.strip())
        cancelled = _is_cancellation(raw["InvoiceNo"])
        quantity, price, when = quantity.result(), price.result(), when.result()

    # Order matters: the first reason that applies is the one recorded.
    reason_code = np.zeros(len(raw), dtype=np.int8)
    reason_code[other] = 3
    reason_code[(quantity < 0).to_numpy(dtype=bool)] = 2
    reason_code[cancelled] = 1
    reason = pd.Series(_REASONS[reason_code], index=raw.index, dtype=object)

    frame = pd.DataFrame(
        {
            USER: customer,
            ITEM: item,
            TIME: when,
            SHOP: shop,
            "event_type": constant_text("purchase", len(raw)),
            "quantity": quantity,
            "price": price,
            ROW: range(len(raw)),
            REASON: reason,
        },
        copy=False,  # fresh columns: no need to copy them into consolidated blocks
    )
    return SourceFrame(frame=frame, raw=raw, source="online_retail")
