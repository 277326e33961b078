"""Independent check of the indicators job against TA-Lib (the `TA-Lib` package, pinned in
scripts/requirements-test.txt): for every date the job wrote, each series' indicators equal
TA-Lib's SMA(20), EMA(20), RSI(14) and BBANDS(20, 2, 2) on the closes up to that date.

    python3 scripts/expected/indicators.py LAKE

NaN in TA-Lib is NULL in finlake. One documented departure: where the closes never changed
(average gain and loss both 0), TA-Lib's RSI is 0 and finlake's 50. Floats agree to 1e-9
relative. Prints {"rows": n, "leading_nulls": {...}, "flat_rsi": [...], "mismatches": [...]}.
"""
import json
import math
import os
import sys

import numpy as np
import talib
from deltalake import DeltaTable


def main() -> int:
    lake = sys.argv[1]
    bars = DeltaTable(os.path.join(lake, "reports", "daily_bars")).to_pyarrow_table(
        columns=["trade_date", "isin", "venue", "close"]).to_pylist()
    series = {}
    for b in sorted(bars, key=lambda b: b["trade_date"]):
        series.setdefault((b["isin"], b["venue"]), []).append((b["trade_date"], float(b["close"])))
    expected = {}
    leading = {}
    flat = []
    for key, points in series.items():
        closes = np.array([p[1] for p in points])
        upper, middle, lower = talib.BBANDS(closes, timeperiod=20, nbdevup=2, nbdevdn=2, matype=0)
        cols = {"sma_20": talib.SMA(closes, 20), "ema_20": talib.EMA(closes, 20), "rsi_14": talib.RSI(closes, 14),
                "bb_upper": upper, "bb_middle": middle, "bb_lower": lower}
        unchanged = [all(closes[j] == closes[0] for j in range(i + 1)) for i in range(len(closes))]
        for name, values in cols.items():
            leading.setdefault(name, set()).add(int(np.sum(np.isnan(values))) if len(closes) >= 20 else None)
        for i, (date, _) in enumerate(points):
            row = {name: (None if math.isnan(v[i]) else float(v[i])) for name, v in cols.items()}
            if row["rsi_14"] is not None and unchanged[i]:
                assert row["rsi_14"] == 0.0, "TA-Lib's RSI of an unchanged series"
                row["rsi_14"] = 50.0
                flat.append(key[0])
            row["days"] = i + 1
            expected[(date, key)] = row
    got = DeltaTable(os.path.join(lake, "reports", "indicators")).to_pyarrow_table().to_pylist()
    mismatches = []
    for r in got:
        k = (r["trade_date"], (r["isin"], r["venue"]))
        want = expected.pop(k, None)
        if want is None:
            mismatches.append({"row": str(k), "problem": "not expected"})
            continue
        for field, value in want.items():
            have = r[field]
            same = (have is None and value is None) or (
                have is not None and value is not None and math.isclose(have, value, rel_tol=1e-9, abs_tol=1e-9))
            if not same:
                mismatches.append({"row": str(k), "field": field, "finlake": have, "expected": value})
    dates = {r["trade_date"] for r in got}
    missing = [str(k) for k in expected if k[0] in dates]
    mismatches += [{"row": k, "problem": "missing from indicators"} for k in missing]
    print(json.dumps({"rows": len(got), "leading_nulls": {k: sorted(x for x in v if x is not None) for k, v in leading.items()},
                      "flat_rsi": sorted(set(flat)), "mismatches": mismatches[:10]}), flush=True)
    return 1 if mismatches else 0


if __name__ == "__main__":
    code = main()
    os._exit(code)
