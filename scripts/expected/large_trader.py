"""Independent check of the large-trader job: recomputes one date's Rule 13h-1 rows from the
executions and accounts tables in plain Python (Decimal sums, no SQL) and compares them with
what finlake wrote.

    python3 scripts/expected/large_trader.py LAKE DATE

Prints one JSON line {"rows": n, "executions": m, "owners": [...], "mismatches": [...]},
exits 1 when anything differs.
"""
import datetime
import json
import os
import sys
from decimal import Decimal

from deltalake import DeltaTable

NMS = {"XNAS", "XNYS"}


def main() -> int:
    lake, day = sys.argv[1], datetime.date.fromisoformat(sys.argv[2])
    owner_of = {a["account_id"]: a["owner_id"] for a in DeltaTable(os.path.join(lake, "refdata", "accounts")).to_pyarrow_table().to_pylist()}
    first = day.replace(day=1)
    per = {}
    used = 0
    for e in DeltaTable(os.path.join(lake, "market", "executions")).to_pyarrow_table().to_pylist():
        if e["exchange"] not in NMS or not (first <= e["trade_date"] <= day) or e["account_id"] not in owner_of:
            continue
        used += 1
        o = per.setdefault(owner_of[e["account_id"]], {"accounts": set(), "day_shares": 0, "day_usd": Decimal(0),
                                                       "month_shares": 0, "month_usd": Decimal(0)})
        o["accounts"].add(e["account_id"])
        o["month_shares"] += e["last_qty"]
        o["month_usd"] += e["notional_usd"]
        if e["trade_date"] == day:
            o["day_shares"] += e["last_qty"]
            o["day_usd"] += e["notional_usd"]
    expected = {}
    for owner, o in per.items():
        levels = {
            "day_shares_level": o["day_shares"] >= 2_000_000,
            "day_usd_level": o["day_usd"] >= 20_000_000,
            "month_shares_level": o["month_shares"] >= 20_000_000,
            "month_usd_level": o["month_usd"] >= 200_000_000,
        }
        if any(levels.values()):
            expected[owner] = dict(levels, accounts=len(o["accounts"]), day_shares=o["day_shares"], day_usd=o["day_usd"],
                                   month_shares=o["month_shares"], month_usd=o["month_usd"])
    got = [r for r in DeltaTable(os.path.join(lake, "reports", "large_trader")).to_pyarrow_table().to_pylist() if r["trade_date"] == day]
    mismatches = []
    owners = sorted(r["owner_id"] for r in got)
    for r in got:
        want = expected.pop(r["owner_id"], None)
        if want is None:
            mismatches.append({"owner": r["owner_id"], "problem": "reported, reaches no level"})
            continue
        for field, value in want.items():
            if r[field] != value:
                mismatches.append({"owner": r["owner_id"], "field": field, "finlake": str(r[field]), "expected": str(value)})
    for owner in expected:
        mismatches.append({"owner": owner, "problem": "reaches a level, missing from large_trader"})
    print(json.dumps({"rows": len(got), "executions": used, "owners": owners, "mismatches": mismatches[:10]}), flush=True)
    return 1 if mismatches else 0


if __name__ == "__main__":
    code = main()
    os._exit(code)
