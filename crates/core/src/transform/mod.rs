//! Transforms: symbol to ISIN through an effective-dated mapping, and currency conversion
//! to a base currency. Both work on whole Arrow batches and return a keep-mask plus rejects;
//! reference data is loaded once and shared through [`refdata::RefCache`].
// Data path: no unwrap/expect on anything derived from message bytes; each remaining one
// says why it cannot fail.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod fx;
pub mod isin;
pub mod refdata;
pub mod symbols;

pub use fx::{FxConverter, FxRates};
pub use isin::is_valid_isin;
pub use refdata::{ExchangeCalendar, RefCache, RefData, Session};
pub use symbols::{Normalizer, SymbolMap};

/// A row a transform refused, by row index in the batch it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowReject {
    /// Row in the input batch.
    pub row: usize,
    /// The rule or transform name.
    pub rule: String,
    /// The field at fault.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// True for an active ISO 4217 currency code, from the `iso_currency` crate's list (kept
/// with the ISO maintenance agency's amendments): a code the list marks superseded (`ZWL`
/// by `ZWG`, `VES` by `VED`) is refused, so a feed still sending it is caught.
///
/// ```
/// use finlake_core::transform::is_iso_currency;
/// assert!(is_iso_currency("EUR"));
/// assert!(is_iso_currency("ZWG") && is_iso_currency("VED"));
/// assert!(!is_iso_currency("ZWL"));
/// assert!(!is_iso_currency("EURO"));
/// ```
pub fn is_iso_currency(code: &str) -> bool {
    // the list answered once for all 17,576 three-letter codes (a bitmap of 2 KiB): the
    // crate's `from_code` is a string match, and a rule calls this once a row
    static ACTIVE: std::sync::LazyLock<Vec<u64>> = std::sync::LazyLock::new(|| {
        let mut bits = vec![0u64; (26 * 26 * 26usize).div_ceil(64)];
        for i in 0..26 * 26 * 26usize {
            let code = [
                b'A' + (i / 676) as u8,
                b'A' + (i / 26 % 26) as u8,
                b'A' + (i % 26) as u8,
            ];
            let code = std::str::from_utf8(&code).unwrap_or_default();
            if iso_currency::Currency::from_code(code).is_some_and(|c| c.is_superseded().is_none())
            {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        bits
    });
    match code.as_bytes() {
        &[a @ b'A'..=b'Z', b @ b'A'..=b'Z', c @ b'A'..=b'Z'] => {
            let i =
                usize::from(a - b'A') * 676 + usize::from(b - b'A') * 26 + usize::from(c - b'A');
            ACTIVE[i / 64] & (1 << (i % 64)) != 0
        }
        _ => false,
    }
}
