//! ISO 6166 ISIN validation.

/// Prefixes that are no ISO 3166-1 country but that numbering agencies assign: `XS`
/// (international securities, Euroclear/Clearstream), `EU` (instruments of the European
/// Union), `XA` to `XD` (CUSIP Global Services' substitute ranges), `XK` (Kosovo, user-assigned
/// in ISO 3166), and `AN` / `CS` (Netherlands Antilles, Serbia and Montenegro: withdrawn from
/// ISO 3166-1, but ISINs issued under them are still outstanding).
const NON_COUNTRY_PREFIXES: &[&str] = &["AN", "CS", "EU", "XA", "XB", "XC", "XD", "XK", "XS"];

/// True when the first two letters may begin an ISIN: an ISO 3166-1 alpha-2 country code (the
/// `iso_country` crate's list) or one of [`NON_COUNTRY_PREFIXES`].
pub fn is_isin_prefix(prefix: &str) -> bool {
    // the list answered once for all 676 pairs of letters: a rule checks millions of rows,
    // and the crate's parser is a string match (a fifth of the ISIN rule's time per row)
    static PREFIXES: std::sync::LazyLock<[bool; 26 * 26]> = std::sync::LazyLock::new(|| {
        let mut ok = [false; 26 * 26];
        for (i, slot) in ok.iter_mut().enumerate() {
            let pair = [b'A' + (i / 26) as u8, b'A' + (i % 26) as u8];
            let pair = std::str::from_utf8(&pair).unwrap_or_default();
            *slot = NON_COUNTRY_PREFIXES.contains(&pair)
                || pair.parse::<iso_country::Country>().is_ok();
        }
        ok
    });
    match prefix.as_bytes() {
        &[a @ b'A'..=b'Z', b @ b'A'..=b'Z'] => {
            PREFIXES[usize::from(a - b'A') * 26 + usize::from(b - b'A')]
        }
        _ => false,
    }
}

/// True when `s` is a 12-character ISIN with a valid check digit whose prefix is a country
/// code or a prefix numbering agencies assign (see [`is_isin_prefix`]).
///
/// ```
/// use finlake_core::transform::is_valid_isin;
/// assert!(is_valid_isin("US0378331005"));
/// assert!(!is_valid_isin("US0378331006"));
/// // the check digit is right, but OB is no country
/// assert!(!is_valid_isin("OBOGYUXBZH70"));
/// ```
pub fn is_valid_isin(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 12
        || !b[..2].iter().all(u8::is_ascii_uppercase)
        || !is_isin_prefix(&s[..2])
        || !b[2..11]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        || !b[11].is_ascii_digit()
    {
        return false;
    }
    // Letters become two digits (A=10 .. Z=35); then Luhn over the digit string, from the right.
    let mut digits = [0u8; 24];
    let mut n = 0;
    for &c in &b[..11] {
        if c.is_ascii_digit() {
            digits[n] = c - b'0';
            n += 1;
        } else {
            let v = c - b'A' + 10;
            digits[n] = v / 10;
            digits[n + 1] = v % 10;
            n += 2;
        }
    }
    let mut sum = 0u32;
    for (i, &d) in digits[..n].iter().rev().enumerate() {
        let d = u32::from(d);
        sum += if i % 2 == 0 {
            let x = d * 2;
            x / 10 + x % 10
        } else {
            d
        };
    }
    let check = (10 - sum % 10) % 10;
    check == u32::from(b[11] - b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_isins() {
        for good in [
            "US0378331005",
            "US5949181045",
            "GB0002634946",
            "DE0007164600",
            "JP3633400001",
            "XS0104440986",
            "EU000A1G0BL1",
        ] {
            assert!(is_valid_isin(good), "{good}");
        }
        for bad in [
            "US0378331006",
            "US037833100",
            "us0378331005",
            "US03783310O5",
            "OBOGYUXBZH70",
            "",
        ] {
            assert!(!is_valid_isin(bad), "{bad}");
        }
    }
}
