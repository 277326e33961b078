//! Finding a pipeline's spec by name, the schema its table has, and opening the table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;
use finlake_core::spec::{self, LoadedSpec, TransformType};

use super::Options;
use crate::error::{QualityError, Result};

/// Spec files in `dirs`, with the pipeline names they declare.
pub fn known_pipelines(dirs: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
            })
            .collect();
        files.sort();
        for path in files {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(node) = spec::yaml::parse(&text) else {
                continue;
            };
            let json = node.to_json();
            if json.get("kind").and_then(|k| k.as_str()) != Some(spec::KIND) {
                continue;
            }
            if let Some(name) = json.pointer("/metadata/name").and_then(|n| n.as_str()) {
                out.push((name.to_string(), path));
            }
        }
    }
    out
}

pub(super) fn find_spec(opts: &Options) -> Result<PathBuf> {
    if let Some(p) = &opts.spec {
        return Ok(p.clone());
    }
    let known = known_pipelines(&opts.spec_dirs);
    if let Some((_, path)) = known.iter().find(|(n, _)| n == &opts.pipeline) {
        return Ok(path.clone());
    }
    let dirs: Vec<String> = opts
        .spec_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
    Err(QualityError::Usage(format!(
        "unknown pipeline `{}`: known pipelines in {} are: {}",
        opts.pipeline,
        dirs.join(", "),
        if names.is_empty() {
            "(none)".to_string()
        } else {
            names.join(", ")
        }
    )))
}

/// The canonical table schema of a pipeline's first source, after its transforms.
pub fn canonical_schema(spec: &LoadedSpec) -> SchemaRef {
    let p = &spec.pipeline.spec;
    let st = p.sources[0].source_type;
    let has = |t| p.transformations.iter().any(|x| x.transform_type == t);
    finlake_core::schema::table_schema(
        st,
        has(TransformType::Normalize),
        has(TransformType::CurrencyConversion) || has(TransformType::Enrich),
    )
}

/// The table `name` beside `uri` (`…/market/trades` -> `…/market/quality_results`).
pub fn sibling(uri: &str, name: &str) -> String {
    let trimmed = uri.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(i) => format!("{}/{name}", &trimmed[..i]),
        None => name.to_string(),
    }
}

pub(super) async fn open_table(uri: &str, storage: &HashMap<String, String>) -> Result<DeltaTable> {
    let url = if uri.contains("://") {
        url::Url::parse(uri).map_err(|e| QualityError::Usage(format!("table {uri}: {e}")))?
    } else {
        let p = Path::new(uri);
        if !p.exists() {
            return Err(QualityError::Usage(format!(
                "table {uri}: no such directory (is --lake right?)"
            )));
        }
        let abs = std::fs::canonicalize(p).map_err(|e| QualityError::Io {
            path: uri.into(),
            source: e,
        })?;
        url::Url::from_directory_path(abs)
            .map_err(|_| QualityError::Usage(format!("table {uri}: not a directory")))?
    };
    if url.scheme() == "s3" || url.scheme() == "s3a" {
        deltalake::aws::register_handlers(None);
    }
    let options = finlake_core::delta::with_client_defaults(&url, storage);
    let table = DeltaTable::try_from_url_with_storage_options(url, options)
        .await
        .map_err(|e| finlake_core::delta::DeltaError::Table {
            uri: uri.into(),
            operation: "open",
            source: Box::new(e),
        })?;
    if table.version().is_none() {
        return Err(QualityError::Usage(format!(
            "table {uri}: not a Delta table (no _delta_log)"
        )));
    }
    Ok(table)
}
