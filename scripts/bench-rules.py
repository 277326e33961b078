#!/usr/bin/env python3
"""The rules of crates/quality/benches/rules-bench.yaml in DuckDB (2 threads) over the same
Parquet file `finlake bench-rules` reads; prints one JSON line per run and the median.

NULL semantics follow finlake's: column rules do not check NULLs, not_null fails them, and a
SQL condition that is unknown fails. Two formulations of the duplicate count run, each timed:
- `lag`: the nearest DuckDB form of finlake's dedup: a row whose key was seen within 60 s
  before it (LAG over the key in arrival order). finlake's dedup also splits exact from
  conflicting duplicates and tracks a watermark, so it does somewhat more work.
- `distinct`: the cheapest form, `count(*) - count(DISTINCT key)`: rows whose key occurs
  earlier anywhere in the file, with no window and no order; it equals the windowed count
  only when every repeat of a key falls within the window (true of this input).
"""
import json
import statistics
import sys
import time

import duckdb

# The rule counts both formulations share; then the two ways of counting duplicates.
RULES = """
SELECT count(*) AS rows,
  count(*) FILTER (WHERE isin IS NULL) AS "isin-present",
  count(*) FILTER (WHERE trade_id IS NULL) AS "trade-id-present",
  count(*) FILTER (WHERE price IS NOT NULL AND NOT (price > 0 AND price < 1000000)) AS "price-range",
  count(*) FILTER (WHERE quantity IS NOT NULL AND NOT (quantity >= 1 AND quantity <= 10000000)) AS "quantity-range",
  count(*) FILTER (WHERE isin IS NOT NULL AND NOT regexp_matches(isin, '^[A-Z]{2}[A-Z0-9]{9}[0-9]$')) AS "isin-shape",
  count(*) FILTER (WHERE currency IS NOT NULL AND currency NOT IN ('USD', 'EUR', 'GBP', 'JPY', 'CHF')) AS "currency-known",
  count(*) FILTER (WHERE side IS NOT NULL AND side NOT IN ('B', 'S')) AS "side-known",
  count(*) FILTER (WHERE "timestamp" IS NOT NULL AND abs(epoch_us("timestamp") - epoch_us(_ingested_at)) > 300000000) AS "clock-skew",
  count(*) FILTER (WHERE (price * quantity < 1000000000) IS NOT TRUE) AS "notional-cap",
  count(*) FILTER (WHERE ("timestamp" BETWEEN market_open AND market_close) IS NOT TRUE) AS "trading-hours","""

QUERY = RULES + """
  count(*) FILTER (WHERE prev_ts IS NOT NULL AND epoch_us("timestamp") - epoch_us(prev_ts) <= 60000000) AS duplicates
FROM (
  SELECT *, lag("timestamp") OVER (PARTITION BY symbol, exchange, trade_id ORDER BY _offset) AS prev_ts
  FROM read_parquet(?)
)
"""

QUERY_DISTINCT = RULES + """
  count(*) - count(DISTINCT (symbol, exchange, trade_id)) AS duplicates
FROM read_parquet(?)
"""


def main() -> None:
    path = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    for form, query in [("lag", QUERY), ("distinct", QUERY_DISTINCT)]:
        secs = []
        for run in range(runs):
            started = time.perf_counter()
            cur = con.execute(query, [path])
            row = cur.fetchone()
            took = time.perf_counter() - started
            secs.append(took)
            names = [d[0] for d in cur.description]
            print(json.dumps({"engine": "duckdb", "dedup": form, "run": run, "seconds": took, **dict(zip(names, row))}), flush=True)
        print(json.dumps({"engine": "duckdb", "dedup": form, "median_seconds": statistics.median(secs), "version": duckdb.__version__}), flush=True)


if __name__ == "__main__":
    main()
