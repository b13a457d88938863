//! The subcommands' glue between the command line and the library: build
//! the job, run it, print the summary, choose the exit code.

pub mod cluster;
pub mod model;
pub mod report;
pub mod run;
pub mod sql;

/// Exit status of a run that finished but embedded nothing (an empty input,
/// a filter that matched no row, only empty texts): its output has no rows.
pub const EXIT_NOTHING_EMBEDDED: u8 = 3;

/// Prints a line to stdout; a closed pipe (`| head`) ends printing quietly
/// instead of panicking as `println!` does. Called after the work is done.
pub fn say(text: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}
