-- Rule 13h-1 (17 CFR 240.13h-1(a)(7)) identifying activity per person for :date and the
-- calendar month to :date (:start is the month's first day). A person is an owner: every
-- account over which the owner exercises investment discretion counts together. Purchases
-- and sales both count; the levels are reached at equality.
WITH activity AS (
  SELECT a.owner_id, e.account_id, e.trade_date, e.last_qty, e.notional_usd
  FROM executions e
  JOIN accounts a ON a.account_id = e.account_id
  WHERE e.exchange IN ('XNAS', 'XNYS')
    AND e.trade_date >= :start AND e.trade_date <= :date
),
per_owner AS (
  SELECT
    owner_id,
    count(DISTINCT account_id) AS accounts,
    coalesce(sum(CASE WHEN trade_date = :date THEN last_qty END), 0) AS day_shares,
    coalesce(sum(CASE WHEN trade_date = :date THEN notional_usd END), CAST(0 AS DECIMAL(24, 6))) AS day_usd,
    sum(last_qty) AS month_shares,
    sum(notional_usd) AS month_usd
  FROM activity
  GROUP BY owner_id
),
levels AS (
  SELECT
    *,
    day_shares >= 2000000 AS day_shares_level,
    day_usd >= 20000000 AS day_usd_level,
    month_shares >= 20000000 AS month_shares_level,
    month_usd >= 200000000 AS month_usd_level
  FROM per_owner
)
SELECT
  CAST(:date AS DATE) AS trade_date,
  owner_id, accounts, day_shares, day_usd, month_shares, month_usd,
  day_shares_level, day_usd_level, month_shares_level, month_usd_level
FROM levels
WHERE day_shares_level OR day_usd_level OR month_shares_level OR month_usd_level
ORDER BY owner_id
