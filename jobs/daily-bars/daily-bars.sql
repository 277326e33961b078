-- One row per (trade_date, isin, venue, currency). Prices are in the trade's currency
-- (price_base, in USD, is in the trades table for cross-venue views). Open and close are
-- the first and last trade by event time, ties broken by trade_id. VWAP is
-- sum(price * quantity) / sum(quantity), exact in DECIMAL and rounded half away from zero
-- to the price's 6 places. Open and close are the first element of the prices ordered by
-- event time (and reversed): the ordered aggregate both engines run (Polars' SQL has no
-- `first_value(x ORDER BY ...)`; DataFusion, Polars and DuckDB all read `array_agg(... ORDER
-- BY ...)[1]`, 1-based). finlake-batch hands DataFusion the equivalent `first_value(x ORDER
-- BY ...)`, which keeps one value per group instead of a sorted list (crates/batch/src/lower.rs).
SELECT
  trade_date,
  isin,
  exchange AS venue,
  currency,
  array_agg(price ORDER BY "timestamp", trade_id)[1] AS open,
  max(price) AS high,
  min(price) AS low,
  array_agg(price ORDER BY "timestamp" DESC, trade_id DESC)[1] AS close,
  sum(quantity) AS volume,
  CAST(sum(price * quantity) / sum(quantity) AS DECIMAL(18, 6)) AS vwap,
  sum(price * quantity) AS notional,
  count(*) AS trade_count
FROM trades
WHERE trade_date = :date AND isin IS NOT NULL
GROUP BY trade_date, isin, exchange, currency
ORDER BY isin, venue
