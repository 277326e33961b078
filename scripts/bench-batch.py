#!/usr/bin/env python3
"""DuckDB running a job's SQL on the same tables' Parquet files that `finlake bench-batch`
timed (2 threads), three runs, as JSON lines, then the median.

    python3 scripts/bench-batch.py LAKE [RUNS] [JOB]     (JOB: daily-bars, the default, or
                                                          execution-quality-605)

The SQL is jobs/JOB/JOB.sql with the spellings DuckDB needs: `:date` is a DATE literal, each
input is a view over its Delta table's files (listed through python `deltalake` before the
timer starts), and a timestamp's microseconds are `epoch_us(ts)` (DuckDB does not cast a
TIMESTAMPTZ to BIGINT; its `//` is the integer division the job writes as a truncating cast).
The result's row count is printed beside finlake's.
"""
import json
import os
import re
import statistics
import sys
import time

import duckdb
import yaml
from deltalake import DeltaTable

ROOT = os.path.join(os.path.dirname(__file__), "..")


def main() -> None:
    lake = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    job = sys.argv[3] if len(sys.argv) > 3 else "daily-bars"
    spec = yaml.safe_load(open(os.path.join(ROOT, "jobs", job, "job.yaml")))
    sql = open(os.path.join(ROOT, "jobs", job, spec["query"])).read()
    sql = re.sub(r"CAST\(CAST\(([\w.\"]+) AS BIGINT\) / 1000000 AS BIGINT\)", r"(epoch_us(\1) // 1000000)", sql)
    sql = re.sub(r"CAST\(([\w.]*\"timestamp\") AS BIGINT\)", r"epoch_us(\1)", sql)
    sql = sql.replace(":date", "DATE '2026-11-20'")
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute("SET enable_progress_bar = false")
    for i in spec["inputs"]:
        uri = i["table_uri"].replace("${LAKE_URI:-./lake}", lake)
        files = DeltaTable(uri).file_uris()
        con.execute(f"CREATE VIEW {i['name']} AS SELECT * FROM read_parquet({files!r}, hive_partitioning = true)")
    secs = []
    for run in range(runs):
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        took = time.perf_counter() - started
        secs.append(took)
        print(json.dumps({"engine": "duckdb", "job": job, "version": duckdb.__version__, "run": run, "seconds": took, "rows_out": len(rows)}), flush=True)
    out = spec["output"]["table_uri"].replace("${LAKE_URI:-./lake}", lake)
    print(json.dumps({"engine": "duckdb", "job": job, "median_seconds": statistics.median(secs), "finlake_rows_out": DeltaTable(out).to_pyarrow_table().num_rows}), flush=True)


if __name__ == "__main__":
    main()
    os._exit(0)
