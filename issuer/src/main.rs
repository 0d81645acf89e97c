//! The `issuer` binary: hands the command line to the library's CLI ([`issuer::cli`]), which loads the configuration
//! and runs the command.

use std::process::ExitCode;

fn main() -> ExitCode {
    issuer::cli::run(std::env::args_os(), &mut std::io::stdout(), &mut std::io::stderr())
}
