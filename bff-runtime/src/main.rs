use std::process::ExitCode;

use clap::Parser;
use facet_bff::cli::{Cli, Command};
use facet_bff::validate::validate_path;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files } => {
            let mut stdout = std::io::stdout().lock();
            let mut errors = 0;
            for file in &files {
                match validate_path(file, &mut stdout) {
                    Ok(n) => errors += n,
                    Err(e) => {
                        eprintln!("facet-bff: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            if errors > 0 {
                eprintln!("{errors} error(s)");
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
