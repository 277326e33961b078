#!/usr/bin/env python3
"""`finlake dq --rescan` on a lake's 2026-11-20 partition, and DuckDB computing the same counts
on the same table's Parquet files (2 threads each); wall time and peak RSS per run, as JSON
lines, then the medians.

DuckDB's counts are the cheapest formulations of what the sample spec's checks measure: rows,
NULL isin, the price/quantity, currency and clock-skew rules, and duplicates as
`count(*) - count(DISTINCT key)`. It does not evaluate the ISIN check digit, the exchange
sessions (trading hours) or dedup's window and exact/conflicting split, which finlake does.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from deltalake import DeltaTable

QUERY = """
SELECT count(*) AS rows,
  count(*) FILTER (WHERE isin IS NULL) AS isin_missing,
  count(*) FILTER (WHERE NOT (price > 0 AND quantity > 0)) AS price_positive,
  count(*) FILTER (WHERE currency NOT IN ('USD', 'EUR', 'GBP', 'JPY', 'CHF')) AS currency_known,
  count(*) FILTER (WHERE abs(epoch_us("timestamp") - epoch_us(_ingested_at)) > 300000000) AS clock_skew,
  count(*) - count(DISTINCT (symbol, exchange, trade_id)) AS duplicates
FROM read_parquet(?, hive_partitioning = true)
WHERE trade_date = DATE '2026-11-20'
"""

DUCKDB = """
import json, sys, time, duckdb
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute("SET enable_progress_bar = false")
started = time.perf_counter()
cur = con.execute(sys.argv[2], [json.loads(sys.argv[1])])
row = cur.fetchone()
took = time.perf_counter() - started
print(json.dumps({"seconds": took, **dict(zip([d[0] for d in cur.description], row))}))
"""


def timed(cmd):
    """Runs `cmd`; its wall time, its own peak RSS (KiB, from wait4) and its stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        took = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if code not in (0, 65):
            sys.exit(f"{cmd[0]} exited {code}: {err.read()}")
        return took, usage.ru_maxrss, out.read()


def main() -> None:
    finlake, lake, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    results = {"finlake": [], "duckdb": []}
    for run in range(runs):
        took, rss, _ = timed([finlake, "dq", "--pipeline", "market-data-stream", "--date", "2026-11-20",
                              "--lake", lake, "--spec-dir", "samples", "--rescan", "--format", "json"])
        results["finlake"].append(took)
        print(json.dumps({"engine": "finlake dq --rescan", "run": run, "seconds": took, "peak_rss_mib": rss / 1024}), flush=True)
    # the table's live files, from its log: a glob would also read the files a compaction
    # replaced, which stay on disk until a vacuum
    files = DeltaTable(f"{lake}/market/trades").file_uris()
    for run in range(runs):
        took, rss, out = timed([sys.executable, "-c", DUCKDB, json.dumps(files), QUERY])
        inner = json.loads(out)
        results["duckdb"].append(inner["seconds"])
        print(json.dumps({"engine": "duckdb", "run": run, "process_seconds": took, "peak_rss_mib": rss / 1024, **inner}), flush=True)
    print(json.dumps({k: statistics.median(v) for k, v in results.items()}), flush=True)


if __name__ == "__main__":
    main()
