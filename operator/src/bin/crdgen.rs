//! Prints the FrontendExperience CRD, or writes it into a directory:
//! `crdgen` prints; `crdgen --out crds` writes `crds/frontendexperiences.facet.dev.yaml`.

use std::path::PathBuf;

use clap::Parser;
use facet_operator::crd::{crd_yaml, CRD_FILE};

#[derive(Parser)]
#[command(about = "Generate the FrontendExperience CRD")]
struct Args {
    /// Directories to write the CRD into; prints it when none is given.
    #[arg(long = "out")]
    out: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let yaml = crd_yaml();
    if args.out.is_empty() {
        print!("{yaml}");
    }
    for dir in args.out {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(CRD_FILE);
        std::fs::write(&path, &yaml)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
