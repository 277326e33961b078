"""Independent check of the daily-bars job: recomputes every bar of one date from the trades
table in plain Python (Decimal arithmetic, no SQL) and compares it with what finlake wrote.

    python3 scripts/expected/daily_bars.py LAKE DATE

Reads both tables with the `deltalake` package (an independent Delta reader). Prints one JSON
line {"bars": n, "trades": m, "mismatches": [...]} and exits 1 when anything differs.
"""
import datetime
import json
import os
import sys
from decimal import ROUND_HALF_UP, Decimal

from deltalake import DeltaTable


def main() -> int:
    lake, day = sys.argv[1], datetime.date.fromisoformat(sys.argv[2])
    trades = [
        t
        for t in DeltaTable(os.path.join(lake, "market", "trades")).to_pyarrow_table(
            columns=["trade_id", "isin", "exchange", "currency", "price", "quantity", "timestamp", "trade_date"],
        ).to_pylist()
        if t["trade_date"] == day
    ]
    groups = {}
    for t in trades:
        if t["isin"] is None:
            continue
        key = (t["isin"], t["exchange"], t["currency"])
        groups.setdefault(key, []).append(t)
    expected = {}
    for key, ts in groups.items():
        ordered = sorted(ts, key=lambda t: (t["timestamp"], t["trade_id"]))
        volume = sum(t["quantity"] for t in ts)
        notional = sum(t["price"] * t["quantity"] for t in ts)
        expected[key] = {
            "open": ordered[0]["price"],
            "close": ordered[-1]["price"],
            "high": max(t["price"] for t in ts),
            "low": min(t["price"] for t in ts),
            "volume": volume,
            "notional": notional,
            "vwap": (notional / Decimal(volume)).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP),
            "trade_count": len(ts),
        }
    bars = [b for b in DeltaTable(os.path.join(lake, "reports", "daily_bars")).to_pyarrow_table().to_pylist() if b["trade_date"] == day]
    mismatches = []
    seen = set()
    for b in bars:
        key = (b["isin"], b["venue"], b["currency"])
        seen.add(key)
        want = expected.get(key)
        if want is None:
            mismatches.append({"bar": str(key), "problem": "no such trades"})
            continue
        for field, value in want.items():
            if b[field] != value:
                mismatches.append({"bar": str(key), "field": field, "finlake": str(b[field]), "expected": str(value)})
    for key in expected.keys() - seen:
        mismatches.append({"bar": str(key), "problem": "missing from daily_bars"})
    print(json.dumps({"bars": len(bars), "trades": len(trades), "mismatches": mismatches[:10]}), flush=True)
    return 1 if mismatches else 0


if __name__ == "__main__":
    code = main()
    # the deltalake wheel can abort in its runtime's teardown at interpreter exit
    os._exit(code)
