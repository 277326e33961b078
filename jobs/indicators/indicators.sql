-- Indicators on :date per (isin, venue), over the daily closes up to :date. `ema` and `rsi`
-- are finlake's window functions (crates/batch/src/indicators.rs); SMA and the bands are a
-- 20-row frame, NULL until the frame is full.
WITH series AS (
  SELECT trade_date, isin, venue, currency, CAST(close AS DOUBLE) AS close
  FROM daily_bars
  WHERE trade_date <= :date
),
computed AS (
  SELECT
    trade_date, isin, venue, currency, close,
    row_number() OVER w AS days,
    count(close) OVER w20 AS n20,
    avg(close) OVER w20 AS avg20,
    stddev_pop(close) OVER w20 AS sd20,
    ema(close, 20) OVER w AS ema_20,
    rsi(close, 14) OVER w AS rsi_14
  FROM series
  WINDOW
    w AS (PARTITION BY isin, venue ORDER BY trade_date),
    w20 AS (PARTITION BY isin, venue ORDER BY trade_date ROWS BETWEEN 19 PRECEDING AND CURRENT ROW)
)
SELECT
  trade_date, isin, venue, currency, close, days,
  CASE WHEN n20 = 20 THEN avg20 END AS sma_20,
  ema_20,
  rsi_14,
  CASE WHEN n20 = 20 THEN avg20 END AS bb_middle,
  CASE WHEN n20 = 20 THEN avg20 + 2 * sd20 END AS bb_upper,
  CASE WHEN n20 = 20 THEN avg20 - 2 * sd20 END AS bb_lower
FROM computed
WHERE trade_date = :date
ORDER BY isin, venue
