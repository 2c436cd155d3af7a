//! What every example's `main` does around its work: `-h` or `--help` prints its usage, and an
//! error is printed as a sentence, with a failing exit status (a `main` returning the error
//! would print its `Debug` form).

use std::error::Error;
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
