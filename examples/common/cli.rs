//! What every example's `main` does around its work: `-h` or `--help` prints its usage, and an
//! error is printed as a sentence, with a failing exit status (a `main` returning the error
//! would print its `Debug` form). Also the check of the examples that reuse a saved model.

use std::error::Error;
use std::path::Path;
use std::process::ExitCode;

/// Prints `usage` if asked for help, otherwise runs `run` and reports its error.
pub fn main(usage: &str, run: impl FnOnce() -> Result<(), Box<dyn Error>>) -> ExitCode {
    if std::env::args()
        .skip(1)
        .any(|arg| arg == "-h" || arg == "--help")
    {
        print!("{usage}");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// An error naming the first of a saved model's `files` that does not exist, for an example
/// run with `flag` (`--no-train`, `--sample-only`): training in its place would overwrite
/// whatever is in the directory.
#[allow(dead_code)] // The examples that train only never reuse a model.
pub fn require_saved(flag: &str, files: &[&Path]) -> Result<(), String> {
    match files.iter().find(|f| !f.exists()) {
        Some(missing) => Err(format!(
            "{flag}: no saved model ({} does not exist); train one first, without {flag}, or \
             give its directory with --out",
            missing.display()
        )),
        None => Ok(()),
    }
}
