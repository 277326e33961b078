"""Independent check of the volume-baseline job: recomputes the baseline of one date from the
daily_bars table in plain Python and compares it with what finlake wrote.

    python3 scripts/expected/volume_baseline.py LAKE DATE WINDOW_START

WINDOW_START is the first trading day of the 20-day window (the run summary's params.start).
Prints one JSON line {"rows": n, "mismatches": [...]}, exits 1 when anything differs.
"""
import datetime
import json
import os
import sys

from deltalake import DeltaTable


def main() -> int:
    lake, day, start = sys.argv[1], datetime.date.fromisoformat(sys.argv[2]), datetime.date.fromisoformat(sys.argv[3])
    bars = DeltaTable(os.path.join(lake, "reports", "daily_bars")).to_pyarrow_table().to_pylist()
    groups = {}
    for b in bars:
        if start <= b["trade_date"] <= day:
            groups.setdefault((b["isin"], b["venue"]), []).append(b)
    expected = {
        key: {
            "days": len(bs),
            "volume_total": sum(b["volume"] for b in bs),
            "avg_daily_volume": sum(b["volume"] for b in bs) / len(bs),
            "last_bar": max(b["trade_date"] for b in bs),
            "window_start": start,
        }
        for key, bs in groups.items()
    }
    got = [r for r in DeltaTable(os.path.join(lake, "reports", "volume_baseline")).to_pyarrow_table().to_pylist() if r["trade_date"] == day]
    mismatches = []
    for row in got:
        key = (row["isin"], row["venue"])
        want = expected.pop(key, None)
        if want is None:
            mismatches.append({"row": str(key), "problem": "no bars"})
            continue
        for field, value in want.items():
            if row[field] != value:
                mismatches.append({"row": str(key), "field": field, "finlake": str(row[field]), "expected": str(value)})
    for key in expected:
        mismatches.append({"row": str(key), "problem": "missing from volume_baseline"})
    print(json.dumps({"rows": len(got), "mismatches": mismatches[:10]}), flush=True)
    return 1 if mismatches else 0


if __name__ == "__main__":
    code = main()
    os._exit(code)
