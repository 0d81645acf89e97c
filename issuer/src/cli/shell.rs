//! `issuer completions SHELL` and `issuer man`: what a packaged CLI ships beside its binary, generated from the one
//! definition of the commands (clap's), so they cannot drift from it.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory as _;

use super::{Cli, CliError, CliResult};

/// Writes the completion script of `shell` for every command and flag.
pub(crate) fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> CliResult {
    let mut command = Cli::command();
    // Into memory first: clap_complete panics on a failed write (a closed pipe), ours reports it.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "issuer", &mut script);
    out.write_all(&script)?;
    Ok(())
}

/// Writes issuer(1) to `out`, or, with `dir`, one page per command into it (`issuer.1`, `issuer-license.1`,
/// `issuer-license-create.1`, ...), saying which.
pub(crate) fn man(dir: Option<&Path>, out: &mut dyn Write) -> CliResult {
    let command = Cli::command();
    let Some(dir) = dir else {
        clap_mangen::Man::new(command).render(out)?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    clap_mangen::generate_to(command, dir)
        .map_err(|e| CliError::Failed(format!("cannot write the man pages to {}: {e}", dir.display())))?;
    let written = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
        .count();
    writeln!(out, "Wrote {written} man pages to {}", dir.display())?;
    Ok(())
}
