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
WITH buckets (size_bucket, lower_usd, upper_usd) AS (
  VALUES
    ('<250', 0, 250),
    ('250-<1k', 250, 1000),
    ('1k-<5k', 1000, 5000),
    ('5k-<10k', 5000, 10000),
    ('10k-<20k', 10000, 20000),
    ('20k-<50k', 20000, 50000),
    ('50k-<200k', 50000, 200000),
    ('>=200k', 200000, NULL)
),
-- NBBO snapshots keyed by their whole second since the epoch (the key both engines compute
-- the same way: the timestamp's microseconds, divided, truncated; all times are after 1970)
nbbo AS (
  SELECT
    symbol, exchange, bid_price, ask_price,
    CAST(CAST("timestamp" AS BIGINT) / 1000000 AS BIGINT) AS second
  FROM quotes
  WHERE trade_date = :date
),
received AS (
  SELECT
    o.order_id, o.symbol, o.exchange, o.order_type, o.price AS limit_price, o.quantity,
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
    r.*,
    CASE
      WHEN r.order_type = 'MARKET' THEN 'market'
      WHEN r.s = 1 AND r.limit_price >= r.nbo THEN 'marketable_limit'
      WHEN r.s = -1 AND r.limit_price <= r.nbb THEN 'marketable_limit'
    END AS order_category,
    b.size_bucket
  FROM received r
  CROSS JOIN buckets b
  WHERE r.quantity * r.mid >= b.lower_usd
    AND (b.upper_usd IS NULL OR r.quantity * r.mid < b.upper_usd)
),
executed AS (
  SELECT
    order_id, last_price, last_qty,
    CAST("timestamp" AS BIGINT) AS executed_us,
    CAST(CAST("timestamp" AS BIGINT) / 1000000 AS BIGINT) + 15 AS second_15s,
    CAST(CAST("timestamp" AS BIGINT) / 1000000 AS BIGINT) + 60 AS second_1m
  FROM executions
  WHERE trade_date = :date
),
fills AS (
  SELECT
    c.order_id,
    e.last_qty AS qty,
    2 * c.s * (e.last_price - c.mid) * e.last_qty AS effective_x_qty,
    (c.nbo - c.nbb) * e.last_qty AS quoted_x_qty,
    CASE WHEN q15.bid_price IS NOT NULL THEN e.last_qty END AS qty_15s,
    2 * c.s * (e.last_price - (q15.bid_price + q15.ask_price) / 2) * e.last_qty AS realized_15s_x_qty,
    CASE WHEN q60.bid_price IS NOT NULL THEN e.last_qty END AS qty_1m,
    2 * c.s * (e.last_price - (q60.bid_price + q60.ask_price) / 2) * e.last_qty AS realized_1m_x_qty,
    c.s * (CASE WHEN c.s = 1 THEN c.nbo ELSE c.nbb END - e.last_price) AS improvement,
    e.executed_us - c.received_us AS micros_to_execution
  FROM covered c
  JOIN executed e ON e.order_id = c.order_id
  LEFT JOIN nbbo q15
    ON q15.symbol = c.symbol AND q15.exchange = c.exchange AND q15.second = e.second_15s
  LEFT JOIN nbbo q60
    ON q60.symbol = c.symbol AND q60.exchange = c.exchange AND q60.second = e.second_1m
  WHERE c.order_category IS NOT NULL
),
per_order AS (
  SELECT
    c.order_id, c.symbol, c.order_category, c.size_bucket, c.quantity,
    coalesce(sum(f.qty), 0) AS executed,
    sum(f.effective_x_qty) AS effective_x_qty,
    sum(f.quoted_x_qty) AS quoted_x_qty,
    sum(f.qty_15s) AS qty_15s,
    sum(f.realized_15s_x_qty) AS realized_15s_x_qty,
    sum(f.qty_1m) AS qty_1m,
    sum(f.realized_1m_x_qty) AS realized_1m_x_qty,
    sum(CASE WHEN f.improvement > 0 THEN f.qty ELSE 0 END) AS improved,
    sum(CASE WHEN f.improvement > 0 THEN f.improvement * f.qty END) AS improvement_x_qty,
    sum(CASE WHEN f.improvement = 0 THEN f.qty ELSE 0 END) AS at_quote,
    sum(CASE WHEN f.improvement < 0 THEN f.qty ELSE 0 END) AS outside_quote,
    sum(f.micros_to_execution * f.qty) AS micros_x_qty
  FROM covered c
  LEFT JOIN fills f ON f.order_id = c.order_id
  WHERE c.order_category IS NOT NULL
  GROUP BY c.order_id, c.symbol, c.order_category, c.size_bucket, c.quantity
),
labelled AS (
  SELECT *, size_bucket AS report_bucket FROM per_order
  UNION ALL
  SELECT *, 'all <200k' AS report_bucket FROM per_order WHERE size_bucket <> '>=200k'
)
SELECT
  CAST(:date AS DATE) AS trade_date,
  symbol,
  order_category,
  report_bucket AS size_bucket,
  count(*) AS covered_orders,
  sum(quantity) AS cumulative_shares,
  sum(executed) AS shares_executed,
  sum(quantity) - sum(executed) AS shares_not_executed,
  CAST(sum(effective_x_qty) AS DOUBLE) / nullif(sum(executed), 0) AS avg_effective_spread,
  CAST(sum(quoted_x_qty) AS DOUBLE) / nullif(sum(executed), 0) AS avg_quoted_spread,
  CAST(sum(effective_x_qty) AS DOUBLE) / nullif(CAST(sum(quoted_x_qty) AS DOUBLE), 0) AS eq_ratio,
  CAST(sum(realized_15s_x_qty) AS DOUBLE) / nullif(sum(qty_15s), 0) AS avg_realized_spread_15s,
  CAST(sum(realized_1m_x_qty) AS DOUBLE) / nullif(sum(qty_1m), 0) AS avg_realized_spread_1m,
  sum(improved) AS shares_price_improved,
  CAST(sum(improvement_x_qty) AS DOUBLE) / nullif(sum(improved), 0) AS avg_price_improvement,
  sum(at_quote) AS shares_at_quote,
  sum(outside_quote) AS shares_outside_quote,
  CAST(sum(micros_x_qty) AS DOUBLE) / nullif(sum(executed), 0) / 1000 AS avg_time_to_execution_ms
FROM labelled
GROUP BY symbol, order_category, report_bucket
ORDER BY symbol, order_category, report_bucket
