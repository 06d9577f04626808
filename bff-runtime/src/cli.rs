//! Command-line interface of `facet-bff`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "facet-bff",
    version,
    about = "Facet's Backend-for-Frontend runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check FrontendExperience manifests; prints every error and exits non-zero on any.
    Validate {
        /// Manifest files (multi-document YAML); `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}
