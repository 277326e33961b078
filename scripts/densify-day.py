#!/usr/bin/env python3
"""A day's trades table made ten times as dense, as a live stream of ten times the partitions
would land it: `densify-day.py SRC_TABLE DST_TABLE`.

Each row of SRC (read in arrival order: `_ingested_at, _topic, _partition, _offset`) becomes
ten copies; copy k is on `_partition + 100 * k`, its `trade_id` suffixed `-k`, its event and
ingest times k microseconds later. The copies are interleaved row by row and written one
commit per 1,000,000 rows with Python `deltalake`. BENCHMARKS.md's 99M-row day is L's day
(9,899,602 rows) through this script.
"""
import sys

import deltalake
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COPIES = 10


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    t = deltalake.DeltaTable(src).to_pyarrow_table()
    t = t.sort_by([(c, "ascending") for c in ("_ingested_at", "_topic", "_partition", "_offset")])
    for start in range(0, t.num_rows, 100_000):
        s = t.slice(start, 100_000)
        m = s.num_rows
        copies = []
        for k in range(COPIES):
            c = s
            for name, f in [
                ("_partition", lambda a: pc.add(a, pa.scalar(100 * k, a.type))),
                ("trade_id", lambda a: pc.binary_join_element_wise(a, pa.scalar(f"-{k}"), pa.scalar(""))),
                ("timestamp", lambda a: pc.add(a, pa.scalar(k, pa.duration("us")))),
                ("_ingested_at", lambda a: pc.add(a, pa.scalar(k, pa.duration("us")))),
            ]:
                i = c.schema.get_field_index(name)
                c = c.set_column(i, c.schema.field(i), f(c.column(i)))
            copies.append(c)
        order = (np.arange(COPIES)[None, :] * m + np.arange(m)[:, None]).reshape(-1)
        big = pa.concat_tables(copies).take(pa.array(order))
        deltalake.write_deltalake(dst, big, mode="append", partition_by=["trade_date"])
    print(t.num_rows * COPIES, "rows")


if __name__ == "__main__":
    main()
