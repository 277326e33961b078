//! finlake-quality: the rule engine (validation and dedup), quality metrics and reports, and the
//! `data-quality-check` command. Empty until its issue lands: the spec's `validation` and
//! `business_rules` are parsed and checked by finlake-core and reported as not enforced yet.
