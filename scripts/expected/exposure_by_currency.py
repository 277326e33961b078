"""Independent check of the exposure-by-currency job: recomputes one date's rows from the
trades table in plain Python (Decimal sums, no SQL) and compares them with what finlake wrote.

    python3 scripts/expected/exposure_by_currency.py LAKE DATE

Prints one JSON line {"rows": n, "trades": m, "mismatches": [...]}, exits 1 when anything differs.
"""
import datetime
import json
import os
import sys
from decimal import Decimal

from deltalake import DeltaTable


def main() -> int:
    lake, day = sys.argv[1], datetime.date.fromisoformat(sys.argv[2])
    cols = ["currency", "side", "notional", "notional_base", "fx_source", "fx_rate_ts", "trade_date"]
    trades = [t for t in DeltaTable(os.path.join(lake, "market", "trades")).to_pyarrow_table(columns=cols).to_pylist() if t["trade_date"] == day]
    expected = {}
    for t in trades:
        e = expected.setdefault(t["currency"], {
            "trades": 0, "gross_notional": Decimal(0), "net_notional": Decimal(0),
            "gross_notional_usd": Decimal(0), "net_notional_usd": Decimal(0),
            "previous_day_rates": 0, "last_rate_at": None,
        })
        sign = {"B": 1, "S": -1}.get(t["side"], 0)
        e["trades"] += 1
        e["gross_notional"] += t["notional"]
        e["net_notional"] += sign * t["notional"]
        e["gross_notional_usd"] += t["notional_base"]
        e["net_notional_usd"] += sign * t["notional_base"]
        e["previous_day_rates"] += t["fx_source"] == "previous_day"
        if t["fx_rate_ts"] is not None and (e["last_rate_at"] is None or t["fx_rate_ts"] > e["last_rate_at"]):
            e["last_rate_at"] = t["fx_rate_ts"]
    got = [r for r in DeltaTable(os.path.join(lake, "reports", "exposure_by_currency")).to_pyarrow_table().to_pylist() if r["trade_date"] == day]
    mismatches = []
    for r in got:
        want = expected.pop(r["currency"], None)
        if want is None:
            mismatches.append({"currency": r["currency"], "problem": "no trades"})
            continue
        for field, value in want.items():
            if r[field] != value:
                mismatches.append({"currency": r["currency"], "field": field, "finlake": str(r[field]), "expected": str(value)})
    for c in expected:
        mismatches.append({"currency": c, "problem": "missing from exposure_by_currency"})
    print(json.dumps({"rows": len(got), "trades": len(trades), "mismatches": mismatches[:10]}), flush=True)
    return 1 if mismatches else 0


if __name__ == "__main__":
    code = main()
    os._exit(code)
