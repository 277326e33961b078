-- SEC Rule 605 summary report (17 CFR 242.605 as amended by Release 34-99679, 2024) for :date.
--
-- Covered orders: market orders and marketable limit orders (a buy limit at or above the
-- NBO, a sell limit at or below the NBB, at receipt) in NMS stocks (listed on XNAS or XNYS).
-- Size bucket: the order's notional value, shares x NBBO midpoint at receipt, lower bound
-- included, upper excluded; `all <200k` is every bucket below $200k together.
-- Per execution, with s = +1 for a buy and -1 for a sell, P its price, M the midpoint:
--   effective spread  2 s (P - M at receipt)        realized spread  2 s (P - M 15 s / 1 min later)
--   price improvement s (NBO or NBB at receipt - P), counted where positive
-- Averages are weighted by shares executed; E/Q is the average effective spread over the
-- average quoted spread (NBO - NBB at receipt); time to execution is share-weighted, in ms.
-- Quotes are NBBO snapshots per second: the quote in force at t is the one stamped t's second
-- (joined on whole seconds since the epoch, an equi-join both engines run).
-- Shape, for speed on every engine (DataFusion and Polars plan a CTE again at each use):
-- the 15 s / 1 min quotes are looked up from the executions scan itself (an execution
-- carries its symbol and listing), an order's bucket is a CASE on its notional, the order
-- counts and the fills are summed per report line apart and joined (reading the covered
-- orders twice costs less than a per-order GROUP BY over 3 M orders), and `all <200k` comes
-- from a join to the report's bucket list rather than a second pass. BENCHMARKS.md has the
-- measurements.
WITH nbbo AS (
  -- NBBO snapshots keyed by their whole second since the epoch (the key both engines compute
  -- the same way: the timestamp's microseconds, divided, truncated; all times are after 1970)
  SELECT
    symbol, exchange, bid_price, ask_price,
    CAST(CAST("timestamp" AS BIGINT) / 1000000 AS BIGINT) AS second
  FROM quotes
  WHERE trade_date = :date
),
received AS (
  SELECT
    o.order_id, o.symbol, o.order_type, o.price AS limit_price, o.quantity,
    CAST(o."timestamp" AS BIGINT) AS received_us,
    CASE WHEN o.side = 'B' THEN 1 ELSE -1 END AS s,
    q.bid_price AS nbb,
    q.ask_price AS nbo,
    (q.bid_price + q.ask_price) / 2 AS mid
  FROM orders o
  JOIN nbbo q
    ON q.symbol = o.symbol AND q.exchange = o.exchange
   AND q.second = CAST(CAST(o."timestamp" AS BIGINT) / 1000000 AS BIGINT)
  WHERE o.trade_date = :date AND o.exchange IN ('XNAS', 'XNYS')
),
covered AS (
  SELECT
    order_id, symbol, quantity, received_us, s, nbb, nbo, mid,
    CASE
      WHEN order_type = 'MARKET' THEN 'market'
      WHEN s = 1 AND limit_price >= nbo THEN 'marketable_limit'
      WHEN s = -1 AND limit_price <= nbb THEN 'marketable_limit'
    END AS order_category,
    -- the order's notional at receipt: lower bound included, upper excluded
    CASE
      WHEN quantity * mid < 250 THEN '<250'
      WHEN quantity * mid < 1000 THEN '250-<1k'
      WHEN quantity * mid < 5000 THEN '1k-<5k'
      WHEN quantity * mid < 10000 THEN '5k-<10k'
      WHEN quantity * mid < 20000 THEN '10k-<20k'
      WHEN quantity * mid < 50000 THEN '20k-<50k'
      WHEN quantity * mid < 200000 THEN '50k-<200k'
      ELSE '>=200k'
    END AS size_bucket
  FROM received
),
executed AS (
  -- each execution with the NBBO 15 s and 1 min after it (NULL where no snapshot)
  SELECT
    e.order_id, e.last_price, e.last_qty,
    CAST(e."timestamp" AS BIGINT) AS executed_us,
    q15.bid_price AS bid_15s, q15.ask_price AS ask_15s,
    q60.bid_price AS bid_1m, q60.ask_price AS ask_1m
  FROM executions e
  LEFT JOIN nbbo q15
    ON q15.symbol = e.symbol AND q15.exchange = e.exchange
   AND q15.second = CAST(CAST(e."timestamp" AS BIGINT) / 1000000 AS BIGINT) + 15
  LEFT JOIN nbbo q60
    ON q60.symbol = e.symbol AND q60.exchange = e.exchange
   AND q60.second = CAST(CAST(e."timestamp" AS BIGINT) / 1000000 AS BIGINT) + 60
  WHERE e.trade_date = :date AND e.exchange IN ('XNAS', 'XNYS')
),
fills AS (
  -- each execution of a covered order, with the order's quote at receipt
  SELECT
    c.symbol, c.order_category, c.size_bucket,
    e.last_qty AS qty,
    2 * c.s * (e.last_price - c.mid) * e.last_qty AS effective_x_qty,
    (c.nbo - c.nbb) * e.last_qty AS quoted_x_qty,
    CASE WHEN e.bid_15s IS NOT NULL THEN e.last_qty END AS qty_15s,
    2 * c.s * (e.last_price - (e.bid_15s + e.ask_15s) / 2) * e.last_qty AS realized_15s_x_qty,
    CASE WHEN e.bid_1m IS NOT NULL THEN e.last_qty END AS qty_1m,
    2 * c.s * (e.last_price - (e.bid_1m + e.ask_1m) / 2) * e.last_qty AS realized_1m_x_qty,
    c.s * (CASE WHEN c.s = 1 THEN c.nbo ELSE c.nbb END - e.last_price) AS improvement,
    e.executed_us - c.received_us AS micros_to_execution
  FROM covered c
  JOIN executed e ON e.order_id = c.order_id
  WHERE c.order_category IS NOT NULL
),
by_orders AS (
  SELECT
    symbol, order_category, size_bucket,
    count(*) AS covered_orders,
    sum(quantity) AS cumulative_shares
  FROM covered
  WHERE order_category IS NOT NULL
  GROUP BY symbol, order_category, size_bucket
),
by_fills AS (
  SELECT
    symbol, order_category, size_bucket,
    sum(qty) AS executed,
    sum(effective_x_qty) AS effective_x_qty,
    sum(quoted_x_qty) AS quoted_x_qty,
    sum(qty_15s) AS qty_15s,
    sum(realized_15s_x_qty) AS realized_15s_x_qty,
    sum(qty_1m) AS qty_1m,
    sum(realized_1m_x_qty) AS realized_1m_x_qty,
    sum(CASE WHEN improvement > 0 THEN qty ELSE 0 END) AS improved,
    sum(CASE WHEN improvement > 0 THEN improvement * qty END) AS improvement_x_qty,
    sum(CASE WHEN improvement = 0 THEN qty ELSE 0 END) AS at_quote,
    sum(CASE WHEN improvement < 0 THEN qty ELSE 0 END) AS outside_quote,
    sum(micros_to_execution * qty) AS micros_x_qty
  FROM fills
  GROUP BY symbol, order_category, size_bucket
),
per_bucket AS (
  -- a bucket whose orders had no execution has NULL sums and zero shares executed
  SELECT
    o.symbol, o.order_category, o.size_bucket, o.covered_orders, o.cumulative_shares,
    coalesce(f.executed, 0) AS executed,
    f.effective_x_qty, f.quoted_x_qty,
    f.qty_15s, f.realized_15s_x_qty, f.qty_1m, f.realized_1m_x_qty,
    coalesce(f.improved, 0) AS improved,
    f.improvement_x_qty,
    coalesce(f.at_quote, 0) AS at_quote,
    coalesce(f.outside_quote, 0) AS outside_quote,
    f.micros_x_qty
  FROM by_orders o
  LEFT JOIN by_fills f
    ON f.symbol = o.symbol AND f.order_category = o.order_category
   AND f.size_bucket = o.size_bucket
),
report_buckets (size_bucket, report_bucket) AS (
  -- each bucket reports as itself; those below $200k also together as `all <200k`
  VALUES
    ('<250', '<250'), ('250-<1k', '250-<1k'), ('1k-<5k', '1k-<5k'), ('5k-<10k', '5k-<10k'),
    ('10k-<20k', '10k-<20k'), ('20k-<50k', '20k-<50k'), ('50k-<200k', '50k-<200k'),
    ('>=200k', '>=200k'),
    ('<250', 'all <200k'), ('250-<1k', 'all <200k'), ('1k-<5k', 'all <200k'),
    ('5k-<10k', 'all <200k'), ('10k-<20k', 'all <200k'), ('20k-<50k', 'all <200k'),
    ('50k-<200k', 'all <200k')
)
SELECT
  CAST(:date AS DATE) AS trade_date,
  p.symbol,
  p.order_category,
  b.report_bucket AS size_bucket,
  sum(p.covered_orders) AS covered_orders,
  sum(p.cumulative_shares) AS cumulative_shares,
  sum(p.executed) AS shares_executed,
  sum(p.cumulative_shares) - sum(p.executed) AS shares_not_executed,
  CAST(sum(p.effective_x_qty) AS DOUBLE) / nullif(sum(p.executed), 0) AS avg_effective_spread,
  CAST(sum(p.quoted_x_qty) AS DOUBLE) / nullif(sum(p.executed), 0) AS avg_quoted_spread,
  CAST(sum(p.effective_x_qty) AS DOUBLE) / nullif(CAST(sum(p.quoted_x_qty) AS DOUBLE), 0) AS eq_ratio,
  CAST(sum(p.realized_15s_x_qty) AS DOUBLE) / nullif(sum(p.qty_15s), 0) AS avg_realized_spread_15s,
  CAST(sum(p.realized_1m_x_qty) AS DOUBLE) / nullif(sum(p.qty_1m), 0) AS avg_realized_spread_1m,
  sum(p.improved) AS shares_price_improved,
  CAST(sum(p.improvement_x_qty) AS DOUBLE) / nullif(sum(p.improved), 0) AS avg_price_improvement,
  sum(p.at_quote) AS shares_at_quote,
  sum(p.outside_quote) AS shares_outside_quote,
  CAST(sum(p.micros_x_qty) AS DOUBLE) / nullif(sum(p.executed), 0) / 1000 AS avg_time_to_execution_ms
FROM per_bucket p
JOIN report_buckets b ON b.size_bucket = p.size_bucket
GROUP BY p.symbol, p.order_category, b.report_bucket
ORDER BY p.symbol, p.order_category, b.report_bucket
