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
    iso_currency::Currency::from_code(code).is_some_and(|c| c.is_superseded().is_none())
}
