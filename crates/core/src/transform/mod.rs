//! Transforms: symbol to ISIN through an effective-dated mapping, and currency conversion
//! to a base currency. Both work on whole Arrow batches and return a keep-mask plus rejects;
//! reference data is loaded once and shared through [`refdata::RefCache`].

pub mod fx;
pub mod isin;
pub mod refdata;
pub mod symbols;

pub use fx::{FxConverter, FxRates};
pub use isin::is_valid_isin;
pub use refdata::{ExchangeCalendar, RefCache, Session};
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

/// ISO 4217 active currency codes.
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW",
    "ZWL",
];

/// True for an ISO 4217 currency code.
///
/// ```
/// assert!(finlake_core::transform::is_iso_currency("EUR"));
/// assert!(!finlake_core::transform::is_iso_currency("EURO"));
/// ```
pub fn is_iso_currency(code: &str) -> bool {
    ISO_4217.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn currency_list_is_sorted_for_binary_search() {
        assert!(super::ISO_4217.windows(2).all(|w| w[0] < w[1]));
    }
}
