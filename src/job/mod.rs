//! Jobs: a TOML file (or the `embed` flags standing in for one) → a
//! validated [`JobPlan`]. `spec` reads raw fields; `plan` checks and resolves.

mod plan;
mod spec;

pub use plan::{
    ChunkPlan, ClusterPlan, EmbedPlan, InputPlan, JobPlan, OnEmpty, OnError, OutputPlan,
    TopicsPlan, cluster_sections,
};
pub use spec::apply_set;

use crate::{Error, Result};

/// Reads a job file, applies `--set` overrides and validates it.
pub fn load(path: &str, sets: &[String]) -> Result<JobPlan> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Job {
        origin: path.to_string(),
        problems: vec![format!("cannot read the job file: {e}")],
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| Error::Job {
        origin: path.to_string(),
        problems: vec![format!("not valid TOML: {}", e.to_string().trim_end())],
    })?;
    from_table(path, &mut table, sets)
}

/// Validates a job given as a TOML table (the `embed` subcommand builds one
/// from its flags), after applying `--set` overrides.
pub fn from_table(origin: &str, table: &mut toml::Table, sets: &[String]) -> Result<JobPlan> {
    let mut problems = Vec::new();
    for s in sets {
        if let Err(p) = apply_set(table, s) {
            problems.push(p);
        }
    }
    if !problems.is_empty() {
        return Err(Error::Job {
            origin: origin.to_string(),
            problems,
        });
    }
    plan::JobPlan::from_table(origin, table)
}
