//! Jobs: a TOML file (or the `embed` flags standing in for one) → a
//! validated [`JobPlan`]. `spec` reads raw fields; `sections` reads and
//! checks each section into the types of `plan`.

mod plan;
mod sections;
mod spec;

pub use plan::{
    ChunkPlan, ClusterPlan, EmbedPlan, IndexPlan, InputPlan, JobPlan, OnEmpty, OnError, OutputPlan,
    TopicsPlan,
};
pub use sections::cluster_sections;
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
        problems: vec![format!("not valid TOML: {}", parse_error(&text, &e))],
    })?;
    from_table(path, &mut table, sets)
}

/// A TOML parse error as the parser says it, with its line quoted; the
/// value of a line whose key names a secret (key, secret, token, password,
/// credential) is never quoted, whatever the error.
fn parse_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().trim_end().to_string();
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let column = text[line_start..start].chars().count() + 1;
    format!(
        "line {line_no}, column {column}: {}\n      | {}",
        e.message().trim_end(),
        redact_secret_line(line)
    )
}

/// The line, with the value after `=` replaced when its key names a secret.
fn redact_secret_line(line: &str) -> String {
    const SECRET_WORDS: [&str; 6] = ["key", "secret", "token", "password", "credential", "auth"];
    let key = line.split('=').next().unwrap_or(line).to_ascii_lowercase();
    let secret = SECRET_WORDS.iter().any(|w| key.contains(w));
    match line.split_once('=') {
        Some((k, _)) if secret => format!("{k}= <redacted: the value of a secret is never shown>"),
        None if secret => "<redacted: this line may hold a secret>".to_string(),
        _ => line.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_error_never_quotes_a_secret() {
        for text in [
            "[s3]\nsecret_access_key = \"wJalrXUtnFEMI/K7MDENG\n",
            "[s3]\nsecret_access_key = wJalrXUtnFEMI/K7MDENG\n",
            "[s3]\naws_session_token = 'wJalrXUtnFEMI/K7MDENG\n",
            "[s3]\nsecret_access_key wJalrXUtnFEMI/K7MDENG\n",
        ] {
            let e = toml::from_str::<toml::Table>(text).unwrap_err();
            let m = parse_error(text, &e);
            assert!(!m.contains("wJalrXUtnFEMI"), "{m}");
            assert!(m.contains("line 2"), "{m}");
        }
        let text = "[input]\npath = \"a.parquet\nx = 1\n";
        let e = toml::from_str::<toml::Table>(text).unwrap_err();
        assert!(parse_error(text, &e).contains("path = \"a.parquet"));
    }
}
