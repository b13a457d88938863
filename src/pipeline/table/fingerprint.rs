//! What a run's output depends on, as hashes: the job (to resume only the
//! same run) and the output's vectors and columns (to copy rows only from
//! a table written the same way).

use std::collections::HashMap;

use arrow::datatypes::SchemaRef;
use sha2::{Digest, Sha256};

/// The table property holding the output fingerprint of the run that wrote
/// the version: an incremental run copies rows only from a table whose
/// fingerprint is its own.
pub(crate) const FINGERPRINT: &str = crate::delta::FINGERPRINT;

/// Lineage keys that do not change the vectors (where and how they ran).
const EXECUTION_KEYS: [&str; 4] = [
    "embedflow.version",
    "embedflow.execution_provider",
    "embedflow.device",
    "embedflow.onnxruntime",
];

/// A hash of what decides the output's vectors and columns: the lineage
/// (model sha256, pooling, normalisation, max length, prompt, text, chunking,
/// filter) and the output schema.
pub(crate) fn output_fingerprint(lineage: &[(String, String)], schema: &SchemaRef) -> String {
    let mut h = Sha256::new();
    for (k, v) in lineage {
        if !EXECUTION_KEYS.contains(&k.as_str()) {
            h.update(format!("{k}={v}\n").as_bytes());
        }
    }
    for f in schema.fields() {
        h.update(format!("{}:{}:{}\n", f.name(), f.data_type(), f.is_nullable()).as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Why a table's fingerprint is not the run's, in the lineage's words.
pub(crate) fn fingerprint_change(
    table: &HashMap<String, String>,
    lineage: &[(String, String)],
) -> String {
    if !table.contains_key(FINGERPRINT) {
        return "the table was not written by an embedflow run with content hashes".into();
    }
    let changed: Vec<String> = lineage
        .iter()
        .filter(|(k, _)| !EXECUTION_KEYS.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let old = table.get(k).map(String::as_str).unwrap_or("(none)");
            (old != v).then(|| {
                let name = k.strip_prefix("embedflow.").unwrap_or(k);
                if name == "model_files" {
                    format!("model files {}", changed_files(old, v))
                } else if name.ends_with("sha256") {
                    format!("{name} changed")
                } else {
                    format!("{name} {old} -> {v}")
                }
            })
        })
        .collect();
    if changed.is_empty() {
        "the output's columns changed".into()
    } else {
        format!("the model or its settings changed ({})", changed.join(", "))
    }
}

/// Which files of two `embedflow.model_files` maps differ, by name.
fn changed_files(old: &str, new: &str) -> String {
    use std::collections::BTreeMap;
    let parse = |s: &str| serde_json::from_str::<BTreeMap<String, String>>(s).unwrap_or_default();
    let (old, new) = (parse(old), parse(new));
    let mut names: Vec<&str> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names.dedup();
    match names.is_empty() {
        true => "changed".into(),
        false => format!("changed: {}", names.join(", ")),
    }
}

/// A hash of what in a job decides the rows and vectors it writes.
pub(crate) fn job_fingerprint(
    plan: &crate::job::JobPlan,
    max_tokens: usize,
    overlap: usize,
) -> String {
    let mut h = Sha256::new();
    // The plan's own rendering covers every option; where the job file is,
    // its name, `overwrite`, the S3 client's settings and the execution
    // settings do not change the output.
    let mut p = plan.clone();
    p.origin = String::new();
    p.name = None;
    p.output.overwrite = true;
    p.s3 = Default::default();
    p.embed.threads = 0;
    p.embed.device = Default::default();
    h.update(format!("{p:?}|{max_tokens}|{overlap}").as_bytes());
    hex::encode(&h.finalize()[..16])
}
