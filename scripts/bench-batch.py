#!/usr/bin/env python3
"""DuckDB running the daily-bars job's SQL on the same trades table's Parquet files that
`finlake bench-batch` timed (2 threads), three runs, as JSON lines, then the median.

The SQL is jobs/daily-bars/daily-bars.sql with two spellings DuckDB needs: its ordered
aggregates are `first`/`last` (DataFusion's `first_value`/`last_value`), and `:date` is a
DATE literal. The result is checked against finlake's daily_bars row count.
"""
import json
import os
import statistics
import sys
import time

import duckdb
from deltalake import DeltaTable


def main() -> None:
    lake, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3
    sql = open(os.path.join(os.path.dirname(__file__), "..", "jobs", "daily-bars", "daily-bars.sql")).read()
    sql = (
        sql.replace("first_value(", "first(")
        .replace("last_value(", "last(")
        .replace(":date", "DATE '2026-11-20'")
        .replace("FROM trades", "FROM read_parquet($files, hive_partitioning = true)")
    )
    files = DeltaTable(os.path.join(lake, "market", "trades")).file_uris()
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute("SET enable_progress_bar = false")
    secs = []
    for run in range(runs):
        started = time.perf_counter()
        rows = con.execute(sql, {"files": files}).fetchall()
        took = time.perf_counter() - started
        secs.append(took)
        print(json.dumps({"engine": "duckdb", "version": duckdb.__version__, "run": run, "seconds": took, "rows_out": len(rows)}), flush=True)
    bars = DeltaTable(os.path.join(lake, "reports", "daily_bars")).to_pyarrow_table().num_rows
    print(json.dumps({"engine": "duckdb", "median_seconds": statistics.median(secs), "finlake_rows_out": bars}), flush=True)


if __name__ == "__main__":
    main()
    os._exit(0)
