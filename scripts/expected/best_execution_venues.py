"""Independent check of the best-execution-venues job: recomputes one date's top-five venues
per instrument class from executions and orders in plain Python and compares them with what
finlake wrote.

    python3 scripts/expected/best_execution_venues.py LAKE DATE

Prints one JSON line {"rows": n, "classes": k, "mismatches": [...]}, exits 1 when anything
differs. Percentages must agree to 1e-9 relative.
"""
import datetime
import json
import math
import os
import sys
from decimal import Decimal

from deltalake import DeltaTable


def band(trades):
    if trades >= 2000:
        return "Equities - Shares & Depositary Receipts - Tick size liquidity bands 5 and 6 (from 2000 trades per day)"
    if trades >= 80:
        return "Equities - Shares & Depositary Receipts - Tick size liquidity bands 3 and 4 (from 80 to 1999 trades per day)"
    return "Equities - Shares & Depositary Receipts - Tick size liquidity bands 1 and 2 (from 0 to 79 trades per day)"


def main() -> int:
    lake, day = sys.argv[1], datetime.date.fromisoformat(sys.argv[2])
    read = lambda name: [r for r in DeltaTable(os.path.join(lake, "market", name)).to_pyarrow_table().to_pylist() if r["trade_date"] == day]
    directed = {o["order_id"]: o["directed"] for o in read("orders")}
    fills = [e for e in read("executions") if e["order_id"] in directed]
    per_isin = {}
    for e in fills:
        per_isin[e["isin"]] = per_isin.get(e["isin"], 0) + 1
    venues = {}
    for e in fills:
        v = venues.setdefault((band(per_isin[e["isin"]]), e["venue"]), {"volume": Decimal(0), "orders": set(), "passive": set(), "aggressive": set(), "directed": set()})
        v["volume"] += e["notional_usd"]
        v["orders"].add(e["order_id"])
        (v["passive"] if e["liquidity"] == "ADD" else v["aggressive"]).add(e["order_id"])
        if directed[e["order_id"]]:
            v["directed"].add(e["order_id"])
    expected = {}
    for cls in {k[0] for k in venues}:
        mine = sorted(((k[1], v) for k, v in venues.items() if k[0] == cls), key=lambda kv: (kv[1]["volume"], kv[0]), reverse=True)
        total_volume = sum(v["volume"] for _, v in mine)
        total_orders = sum(len(v["orders"]) for _, v in mine)
        for rank, (venue, v) in enumerate(mine[:5], start=1):
            n = len(v["orders"])
            expected[(cls, rank)] = {
                "venue": venue, "volume_usd": v["volume"], "orders": n,
                "volume_pct": float(100 * v["volume"] / total_volume),
                "orders_pct": 100 * n / total_orders,
                "passive_pct": 100 * len(v["passive"]) / n,
                "aggressive_pct": 100 * len(v["aggressive"]) / n,
                "directed_pct": 100 * len(v["directed"]) / n,
            }
    got = [r for r in DeltaTable(os.path.join(lake, "reports", "best_execution_venues")).to_pyarrow_table().to_pylist() if r["trade_date"] == day]
    mismatches = []
    for r in got:
        want = expected.pop((r["instrument_class"], r["venue_rank"]), None)
        if want is None:
            mismatches.append({"row": [r["instrument_class"], r["venue_rank"]], "problem": "not expected"})
            continue
        for field, value in want.items():
            same = math.isclose(r[field], value, rel_tol=1e-9) if isinstance(value, float) else r[field] == value
            if not same:
                mismatches.append({"row": [r["instrument_class"], r["venue_rank"]], "field": field, "finlake": str(r[field]), "expected": str(value)})
    for k in expected:
        mismatches.append({"row": list(k), "problem": "missing from best_execution_venues"})
    print(json.dumps({"rows": len(got), "classes": len({r["instrument_class"] for r in got}), "mismatches": mismatches[:10]}), flush=True)
    return 1 if mismatches else 0


if __name__ == "__main__":
    code = main()
    os._exit(code)
