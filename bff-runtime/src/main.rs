use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use facet_bff::cli::{Cli, Command, RunArgs};
use facet_bff::contract::ordinal_of;
use facet_bff::runtime::{Runtime, RuntimeConfig};
use facet_bff::spec::{parse_manifests, spec_from_value};
use facet_bff::validate::validate_path;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files } => validate(&files),
        Command::Run(args) => serve(run(args)),
        Command::Dev(args) => serve(facet_bff::dev::run(facet_bff::dev::DevOptions {
            spec: args.spec,
            events: args.events,
            kafka: args.kafka,
            http: args.http,
            metrics: args.metrics,
            data_dir: args.data_dir,
            rate: args.rate,
            repeat: args.repeat,
        })),
    }
}

fn validate(files: &[std::path::PathBuf]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let mut errors = 0;
    for file in files {
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

fn serve(task: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    facet_bff::logging::init("info,rdkafka=warn");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("facet-bff: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("facet-bff: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading {}", args.spec.display()))?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", args.spec.display()))?;
    let (name, namespace, spec) = if value.get("kind").is_some() {
        let manifest = parse_manifests(&text)
            .into_iter()
            .next()
            .context("no FrontendExperience in the spec file")?
            .map_err(|e| anyhow::anyhow!("{}:\n{}", args.spec.display(), e.errors))?;
        let namespace = manifest.namespace.unwrap_or(args.namespace);
        (manifest.name, namespace, manifest.spec)
    } else {
        let spec =
            spec_from_value(value).map_err(|e| anyhow::anyhow!("{}:\n{e}", args.spec.display()))?;
        let name = args.name.context("--name is needed with a bare spec")?;
        (name, args.namespace, spec)
    };
    let extra_kafka_properties = match &args.kafka_secret_dir {
        Some(dir) => read_property_dir(dir)?,
        None => Vec::new(),
    };
    let runtime = Runtime::start(RuntimeConfig {
        name,
        namespace,
        ordinal: ordinal_of(&args.pod_name).to_string(),
        spec,
        data_dir: args.data_dir,
        http: args.http,
        metrics: args.metrics,
        bootstrap_servers: args.kafka,
        extra_kafka_properties,
        auth: None,
        dev_producer: None,
        sample_events: Vec::new(),
        console: args.console,
    })
    .await?;
    let drain = std::time::Duration::from_secs(args.drain_seconds);
    runtime.run_until_shutdown(drain).await
}

/// Reads a mounted Secret: each file is one librdkafka property.
fn read_property_dir(dir: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut properties = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !entry.path().is_file() {
            continue;
        }
        let value = std::fs::read(entry.path())?;
        properties.extend(facet_bff::contract::secret_property(&name, &value));
    }
    Ok(properties)
}
