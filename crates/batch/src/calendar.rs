//! Trading days on the core's exchange calendar (weekends, holidays; an early close is still
//! a trading day).

use chrono::{Days, NaiveDate};
use finlake_core::transform::{ExchangeCalendar, Session};

/// Most calendar days searched for a trading day (a calendar that closes an exchange for a
/// year is wrong; stop rather than loop).
const SEARCH: u32 = 366;

/// Whether `mic` trades on `date`.
pub fn is_trading_day(cal: &ExchangeCalendar, mic: &str, date: NaiveDate) -> bool {
    matches!(cal.session(mic, date), Some(Session::Open(..)))
}

/// The last trading day strictly before `date`.
pub fn previous_trading_day(cal: &ExchangeCalendar, mic: &str, date: NaiveDate) -> NaiveDate {
    let mut d = date;
    for _ in 0..SEARCH {
        d = d.checked_sub_days(Days::new(1)).unwrap_or(d);
        if is_trading_day(cal, mic, d) {
            return d;
        }
    }
    date.checked_sub_days(Days::new(1)).unwrap_or(date)
}

/// The trading day `n` trading days before `date` (`n = 0`: `date` itself).
pub fn trading_days_back(cal: &ExchangeCalendar, mic: &str, date: NaiveDate, n: u32) -> NaiveDate {
    (0..n).fold(date, |d, _| previous_trading_day(cal, mic, d))
}

/// The trading days from `from` to `to`, both included.
pub fn trading_days(
    cal: &ExchangeCalendar,
    mic: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Vec<NaiveDate> {
    from.iter_days()
        .take_while(|d| *d <= to)
        .filter(|d| is_trading_day(cal, mic, *d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn weekends_and_holidays_are_skipped() {
        let cal = ExchangeCalendar::embedded();
        // Monday 2026-11-23 -> Friday 2026-11-20
        assert_eq!(
            previous_trading_day(&cal, "XNYS", d("2026-11-23")),
            d("2026-11-20")
        );
        // Friday 2026-11-27 (early close after Thanksgiving) follows Wednesday: Thursday
        // 2026-11-26 is a holiday
        assert_eq!(
            previous_trading_day(&cal, "XNYS", d("2026-11-27")),
            d("2026-11-25")
        );
        assert!(is_trading_day(&cal, "XNYS", d("2026-11-27")));
        assert_eq!(
            trading_days_back(&cal, "XNYS", d("2026-11-20"), 0),
            d("2026-11-20")
        );
        assert_eq!(
            trading_days_back(&cal, "XNYS", d("2026-11-20"), 5),
            d("2026-11-13")
        );
        assert_eq!(
            trading_days(&cal, "XNYS", d("2026-11-20"), d("2026-11-30")),
            vec![
                d("2026-11-20"),
                d("2026-11-23"),
                d("2026-11-24"),
                d("2026-11-25"),
                d("2026-11-27"),
                d("2026-11-30")
            ]
        );
    }
}
