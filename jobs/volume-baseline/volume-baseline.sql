-- As of :date, over the window the input is pruned to (:start to :date, 20 trading days):
-- per ISIN and venue, the days with a bar, their total volume, the average daily volume
-- (total / days, a DOUBLE) and the date of the last bar.
SELECT
  CAST(:date AS DATE) AS trade_date,
  isin,
  venue,
  CAST(:start AS DATE) AS window_start,
  count(*) AS days,
  sum(volume) AS volume_total,
  CAST(sum(volume) AS DOUBLE) / CAST(count(*) AS DOUBLE) AS avg_daily_volume,
  max(trade_date) AS last_bar
FROM daily_bars
GROUP BY isin, venue
ORDER BY isin, venue
