-- Per trade currency on :date: trades, gross notional (sum of price x quantity), net notional
-- (buys positive, sells negative; a trade with no side counts in gross only), the same in USD
-- (notional_base: each trade converted by the stream), how many trades were converted at the
-- previous day's rate, and the latest rate time used. Exact DECIMAL sums.
SELECT
  trade_date,
  currency,
  count(*) AS trades,
  sum(notional) AS gross_notional,
  sum(CASE side WHEN 'B' THEN notional WHEN 'S' THEN -notional ELSE CAST(0 AS DECIMAL(24, 6)) END) AS net_notional,
  sum(notional_base) AS gross_notional_usd,
  sum(CASE side WHEN 'B' THEN notional_base WHEN 'S' THEN -notional_base ELSE CAST(0 AS DECIMAL(24, 6)) END) AS net_notional_usd,
  count(*) FILTER (WHERE fx_source = 'previous_day') AS previous_day_rates,
  max(fx_rate_ts) AS last_rate_at
FROM trades
WHERE trade_date = :date
GROUP BY trade_date, currency
ORDER BY currency
