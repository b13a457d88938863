//! The crate's error type. Each variant names the stage that failed and
//! carries enough context (file, row, column, field) for a user to act on it.
//! `Internal` is reserved for bugs.

use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job file (or the flags standing in for one) has problems; all of them are listed.
    #[error("{}", Problems { origin, problems })]
    Job {
        origin: String,
        problems: Vec<String>,
    },

    /// An input could not be found, listed, opened or decoded.
    #[error("input {file}: {message}")]
    Input { file: String, message: String },

    /// A model folder is incomplete or its configuration is unusable.
    #[error("model {dir}: {message}")]
    Model { dir: String, message: String },

    /// The ONNX Runtime library could not be loaded or a session failed.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),

    /// Text that the job's `on_empty = "fail"` refuses, or a tokenizer failure.
    #[error("{0}")]
    Data(String),

    /// A remote embedding API failed or refused (the key is never in it).
    #[error("embedding API: {0}")]
    Api(String),

    /// Flags or the environment ask for something impossible (a shard
    /// index without a count, two counts that disagree).
    #[error("{0}")]
    Usage(String),

    /// The output could not be written; nothing was committed.
    #[error("output {file}: {message}")]
    Output { file: String, message: String },

    /// A SQL statement failed to plan or run (with its position when known).
    #[error("query: {0}")]
    Query(String),

    /// The run was stopped (Ctrl-C, or another stage failed first).
    #[error("interrupted: nothing was committed")]
    Interrupted,

    /// A bug in embedflow.
    #[error("internal error (this is a bug in embedflow, please report it): {0}")]
    Internal(String),
}

struct Problems<'a> {
    origin: &'a str,
    problems: &'a [String],
}

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.origin,
            if n == 1 { "" } else { "s" }
        )?;
        for p in self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl Error {
    pub fn input(file: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Input {
            file: file.to_string(),
            message: message.to_string(),
        }
    }

    /// No column `name` in `file`: says which columns there are.
    pub fn missing_column(
        file: impl fmt::Display,
        name: &str,
        schema: &arrow::datatypes::Schema,
    ) -> Self {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        Error::input(
            file,
            format!(
                "no column '{name}'; the columns are: {}",
                columns.join(", ")
            ),
        )
    }

    pub fn model(dir: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Model {
            dir: dir.to_string(),
            message: message.to_string(),
        }
    }

    pub fn output(file: impl fmt::Display, message: impl fmt::Display) -> Self {
        Error::Output {
            file: file.to_string(),
            message: message.to_string(),
        }
    }

    pub fn internal(message: impl fmt::Display) -> Self {
        Error::Internal(message.to_string())
    }
}

/// Suggests the closest of `candidates` to `name`, for "did you mean …?" hints.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_miss_only() {
        let fields = ["text_column", "text_template", "id_column"];
        assert_eq!(did_you_mean("text_colum", fields), Some("text_column"));
        assert_eq!(did_you_mean("txt_template", fields), Some("text_template"));
        assert_eq!(did_you_mean("zzz", fields), None);
    }

    #[test]
    fn job_error_lists_every_problem() {
        let e = Error::Job {
            origin: "jobs/x.toml".into(),
            problems: vec!["a".into(), "b".into()],
        };
        assert_eq!(e.to_string(), "jobs/x.toml: 2 problems\n  - a\n  - b");
    }
}
