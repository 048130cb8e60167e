//! `sibyl`: the oracle daemon. Thin: parse the command line, hand off.

use std::process::ExitCode;

fn main() -> ExitCode {
    match sibyl::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        // Output to a closed pipe (`sibyl ... | head -1`): end quietly.
        Err(e) if sibyl::cli::is_broken_pipe(&e) => ExitCode::from(sibyl::cli::BROKEN_PIPE_EXIT),
        Err(e) => {
            // What went wrong first, then why, one cause per line; a stack
            // trace only when asked for (SIBYL_BACKTRACE=1), since operators
            // read these and RUST_BACKTRACE is often set machine-wide.
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            if std::env::var_os("SIBYL_BACKTRACE").is_some_and(|v| v == "1") {
                eprintln!("\n{}", e.backtrace());
            }
            ExitCode::FAILURE
        }
    }
}
