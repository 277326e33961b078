//! finlake-batch: the job runner for regulatory aggregations and quality reports. Empty until
//! its issue lands; partition overwrite is already in `finlake_core::delta::replace_partition`.
