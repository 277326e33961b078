"""Independent check of the execution-quality-605 job: recomputes one date's Rule 605 rows
from orders, executions and quotes in plain Python (Decimal arithmetic, no SQL) and compares
them with what finlake wrote.

    python3 scripts/expected/execution_quality_605.py LAKE DATE

The NBBO at a time is found by an as-of search (the last quote at or before it) over each
instrument's quotes, not by the job's per-second join, so the job's reading of the quote
table is checked too. Buckets are this file's own table (docs/JOBS.md). Prints one JSON line
{"rows": n, "orders": m, "mismatches": [...], "buckets": {bucket: covered orders}} and
exits 1 when anything differs. Floats (the averages) must agree to 1e-9 relative.
"""
import bisect
import datetime
import json
import math
import os
import sys
from decimal import Decimal

from deltalake import DeltaTable

US = {"XNAS", "XNYS"}
# (label, lower included, upper excluded); the last has no upper bound
BUCKETS = [
    ("<250", 0, 250),
    ("250-<1k", 250, 1_000),
    ("1k-<5k", 1_000, 5_000),
    ("5k-<10k", 5_000, 10_000),
    ("10k-<20k", 10_000, 20_000),
    ("20k-<50k", 20_000, 50_000),
    ("50k-<200k", 50_000, 200_000),
    (">=200k", 200_000, None),
]


def bucket_of(notional):
    for label, lo, hi in BUCKETS:
        if notional >= lo and (hi is None or notional < hi):
            return label
    raise ValueError(notional)


def read(lake, name, day):
    rows = DeltaTable(os.path.join(lake, "market", name)).to_pyarrow_table().to_pylist()
    return [r for r in rows if r["trade_date"] == day]


def main() -> int:
    lake, day = sys.argv[1], datetime.date.fromisoformat(sys.argv[2])
    quotes = {}
    for q in read(lake, "quotes", day):
        quotes.setdefault((q["symbol"], q["exchange"]), []).append((q["timestamp"], q["bid_price"], q["ask_price"]))
    for v in quotes.values():
        v.sort()
    times = {k: [q[0] for q in v] for k, v in quotes.items()}

    def nbbo(key, t):
        i = bisect.bisect_right(times[key], t) - 1
        if i < 0:
            return None
        return quotes[key][i][1], quotes[key][i][2]

    fills = {}
    for e in read(lake, "executions", day):
        fills.setdefault(e["order_id"], []).append(e)
    groups = {}
    covered_orders = 0
    for o in read(lake, "orders", day):
        if o["exchange"] not in US:
            continue
        key = (o["symbol"], o["exchange"])
        at = nbbo(key, o["timestamp"])
        if at is None:
            continue
        nbb, nbo = at
        s = 1 if o["side"] == "B" else -1
        if o["order_type"] == "MARKET":
            category = "market"
        elif (s == 1 and o["price"] >= nbo) or (s == -1 and o["price"] <= nbb):
            category = "marketable_limit"
        else:
            continue
        covered_orders += 1
        mid = (nbb + nbo) / 2
        label = bucket_of(o["quantity"] * mid)
        for report_bucket in [label] + (["all <200k"] if label != ">=200k" else []):
            g = groups.setdefault((o["symbol"], category, report_bucket), {
                "covered_orders": 0, "cumulative_shares": 0, "shares_executed": 0,
                "eff": Decimal(0), "quoted": Decimal(0), "r15": Decimal(0), "q15": 0,
                "r60": Decimal(0), "q60": 0, "improved": 0, "improvement": Decimal(0),
                "at_quote": 0, "outside_quote": 0, "micros": 0,
            })
            g["covered_orders"] += 1
            g["cumulative_shares"] += o["quantity"]
            for e in fills.get(o["order_id"], []):
                p, q = e["last_price"], e["last_qty"]
                g["shares_executed"] += q
                g["eff"] += 2 * s * (p - mid) * q
                g["quoted"] += (nbo - nbb) * q
                for later, num, den in ((15, "r15", "q15"), (60, "r60", "q60")):
                    then = nbbo(key, e["timestamp"] + datetime.timedelta(seconds=later))
                    if then is not None:
                        g[num] += 2 * s * (p - (then[0] + then[1]) / 2) * q
                        g[den] += q
                improvement = s * ((nbo if s == 1 else nbb) - p)
                if improvement > 0:
                    g["improved"] += q
                    g["improvement"] += improvement * q
                elif improvement == 0:
                    g["at_quote"] += q
                else:
                    g["outside_quote"] += q
                g["micros"] += (e["timestamp"] - o["timestamp"]) // datetime.timedelta(microseconds=1) * q

    def ratio(a, b):
        return None if b == 0 else float(Decimal(a) / Decimal(b))

    expected = {}
    for k, g in groups.items():
        expected[k] = {
            "covered_orders": g["covered_orders"],
            "cumulative_shares": g["cumulative_shares"],
            "shares_executed": g["shares_executed"],
            "shares_not_executed": g["cumulative_shares"] - g["shares_executed"],
            "avg_effective_spread": ratio(g["eff"], g["shares_executed"]),
            "avg_quoted_spread": ratio(g["quoted"], g["shares_executed"]),
            "eq_ratio": ratio(g["eff"], g["quoted"]),
            "avg_realized_spread_15s": ratio(g["r15"], g["q15"]),
            "avg_realized_spread_1m": ratio(g["r60"], g["q60"]),
            "shares_price_improved": g["improved"],
            "avg_price_improvement": ratio(g["improvement"], g["improved"]),
            "shares_at_quote": g["at_quote"],
            "shares_outside_quote": g["outside_quote"],
            "avg_time_to_execution_ms": ratio(g["micros"], g["shares_executed"] * 1000),
        }
    got = [r for r in DeltaTable(os.path.join(lake, "reports", "execution_quality_605")).to_pyarrow_table().to_pylist() if r["trade_date"] == day]
    mismatches = []
    for r in got:
        k = (r["symbol"], r["order_category"], r["size_bucket"])
        want = expected.pop(k, None)
        if want is None:
            mismatches.append({"row": k, "problem": "not expected"})
            continue
        for field, value in want.items():
            have = r[field]
            if isinstance(value, float) or isinstance(have, float):
                same = (value is None and have is None) or (
                    value is not None and have is not None and math.isclose(have, value, rel_tol=1e-9, abs_tol=1e-9))
            else:
                same = have == value
            if not same:
                mismatches.append({"row": k, "field": field, "finlake": str(have), "expected": str(value)})
    for k in expected:
        mismatches.append({"row": k, "problem": "missing from execution_quality_605"})
    buckets = {}
    for r in got:
        if r["size_bucket"] != "all <200k":
            buckets[r["size_bucket"]] = buckets.get(r["size_bucket"], 0) + r["covered_orders"]
    print(json.dumps({"rows": len(got), "orders": covered_orders, "mismatches": mismatches[:10], "buckets": buckets}), flush=True)
    return 1 if mismatches else 0


if __name__ == "__main__":
    code = main()
    os._exit(code)
