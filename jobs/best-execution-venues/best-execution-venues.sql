-- Top five execution venues per class of instrument on :date, RTS 28's columns:
-- proportion of volume traded (USD notional) and of orders executed as a percentage of the
-- class's total, and the percentages of the venue's executed orders that were passive
-- (added liquidity), aggressive (removed it) and directed (the client chose the venue).
-- Venues rank by volume, ties by venue code descending (one direction: Polars' OVER needs it).
WITH fills AS (
  SELECT e.isin, e.venue, e.order_id, e.liquidity, e.notional_usd, o.directed
  FROM executions e
  JOIN orders o ON o.order_id = e.order_id
  WHERE e.trade_date = :date AND o.trade_date = :date
),
classes AS (
  SELECT
    isin,
    CASE
      WHEN count(*) >= 2000 THEN 'Equities - Shares & Depositary Receipts - Tick size liquidity bands 5 and 6 (from 2000 trades per day)'
      WHEN count(*) >= 80 THEN 'Equities - Shares & Depositary Receipts - Tick size liquidity bands 3 and 4 (from 80 to 1999 trades per day)'
      ELSE 'Equities - Shares & Depositary Receipts - Tick size liquidity bands 1 and 2 (from 0 to 79 trades per day)'
    END AS instrument_class
  FROM fills
  GROUP BY isin
),
per_venue AS (
  SELECT
    c.instrument_class,
    f.venue,
    sum(f.notional_usd) AS volume_usd,
    count(DISTINCT f.order_id) AS orders,
    count(DISTINCT CASE WHEN f.liquidity = 'ADD' THEN f.order_id END) AS passive_orders,
    count(DISTINCT CASE WHEN f.liquidity = 'REMOVE' THEN f.order_id END) AS aggressive_orders,
    count(DISTINCT CASE WHEN f.directed THEN f.order_id END) AS directed_orders
  FROM fills f
  JOIN classes c ON c.isin = f.isin
  GROUP BY c.instrument_class, f.venue
),
ranked AS (
  SELECT
    *,
    row_number() OVER (PARTITION BY instrument_class ORDER BY volume_usd DESC, venue DESC) AS venue_rank,
    sum(volume_usd) OVER (PARTITION BY instrument_class) AS class_volume_usd,
    sum(orders) OVER (PARTITION BY instrument_class) AS class_orders
  FROM per_venue
)
SELECT
  CAST(:date AS DATE) AS trade_date,
  instrument_class,
  venue_rank,
  venue,
  volume_usd,
  orders,
  100.0 * CAST(volume_usd AS DOUBLE) / CAST(class_volume_usd AS DOUBLE) AS volume_pct,
  100.0 * orders / class_orders AS orders_pct,
  100.0 * passive_orders / orders AS passive_pct,
  100.0 * aggressive_orders / orders AS aggressive_pct,
  100.0 * directed_orders / orders AS directed_pct
FROM ranked
WHERE venue_rank <= 5
ORDER BY instrument_class, venue_rank
