use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use facet_bff::cli::{Cli, Command, ImageCommand, RunArgs};
use facet_bff::contract::ordinal_of;
use facet_bff::runtime::{Runtime, RuntimeConfig};
use facet_bff::spec::{parse_manifests, spec_from_value};
use facet_bff::validate::validate_path;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files } => validate(&files),
        Command::Run(args) => serve(run(args)),
        Command::Image(command) => match image(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("facet-bff: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Schema(args) => match schema(args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("facet-bff: {e:#}");
                ExitCode::FAILURE
            }
        },
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

/// `facet-bff schema`: the spec compiled exactly as `run` compiles it, then written
/// out as the runtime would serve it.
fn schema(args: facet_bff::cli::SchemaArgs) -> anyhow::Result<String> {
    let (name, namespace, spec) = load_spec(&args.spec, args.name, args.namespace)?;
    let compiled = facet_bff::spec::compile(&spec)
        .map_err(|e| anyhow::anyhow!("{}:\n{e}", args.spec.display()))?;
    // The title the runtime gives its OpenAPI document and the TypeScript header.
    let title = format!("{namespace}/{name}");
    let format = &args.format;
    Ok(if format.graphql {
        facet_bff::serve::graphql::schema(&compiled)
            .map_err(|e| anyhow::anyhow!("building the GraphQL schema: {e}"))?
            .sdl()
    } else if format.openapi {
        let document = facet_bff::serve::openapi::document(&compiled, &title);
        serde_json::to_string_pretty(&document)? + "\n"
    } else {
        facet_bff::spec::typescript::declarations(&compiled, &title)
    })
}

/// A manifest's name, namespace and spec; a bare spec takes `name` and `namespace`.
fn load_spec(
    path: &std::path::Path,
    name: Option<String>,
    namespace: String,
) -> anyhow::Result<(String, String, facet_bff::spec::ExperienceSpec)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if value.get("kind").is_some() {
        let manifest = parse_manifests(&text)
            .into_iter()
            .next()
            .context("no FrontendExperience in the spec file")?
            .map_err(|e| anyhow::anyhow!("{}:\n{}", path.display(), e.errors))?;
        let namespace = manifest.namespace.unwrap_or(namespace);
        Ok((manifest.name, namespace, manifest.spec))
    } else {
        let spec =
            spec_from_value(value).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
        let name = name.context("--name is needed with a bare spec")?;
        Ok((name, namespace, spec))
    }
}

/// Copies a running pod's image to `out`, checking it (whole, intact, of the spec's
/// definition) as it is written.
fn export_from_pod(
    from: &str,
    spec: &std::path::Path,
    token_file: &std::path::Path,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<facet_bff::store::image::ImageSummary> {
    use facet_bff::peer::copy;
    let (_, _, spec) = load_spec(spec, Some("export".into()), "default".into())?;
    let compiled =
        facet_bff::spec::compile(&spec).map_err(|e| anyhow::anyhow!("invalid spec:\n{e}"))?;
    let definition = facet_bff::store::image::definition_of(&compiled.store_layout());
    let token = facet_bff::peer::read_token(token_file)
        .with_context(|| format!("no peer token in {}", token_file.display()))?;
    let body = copy::open_image(&copy::agent(), from, &token, &definition).map_err(
        |(outcome, reason)| anyhow::anyhow!("{from} gave no image ({}): {reason}", outcome.label()),
    )?;
    let tee = Tee { input: body, out };
    let summary = facet_bff::store::image::verify(std::io::BufReader::new(tee), Some(&definition))
        .with_context(|| format!("the image from {from} was refused"))?;
    out.flush()?;
    Ok(summary)
}

/// Writes everything read through it to `out`.
struct Tee<'a, R> {
    input: R,
    out: &'a mut dyn std::io::Write,
}

impl<R: std::io::Read> std::io::Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.input.read(buf)?;
        self.out.write_all(&buf[..read])?;
        Ok(read)
    }
}

fn image(command: ImageCommand) -> anyhow::Result<()> {
    use facet_bff::store::image;
    match command {
        ImageCommand::Export {
            data_dir,
            from,
            spec,
            peer_token_file,
            out,
        } => {
            let mut output: Box<dyn std::io::Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let summary = match (data_dir, from, spec, peer_token_file) {
                (Some(data_dir), ..) => {
                    let store = data_dir.join("store.redb");
                    image::export_file(&store, &mut output)
                        .with_context(|| format!("exporting {}", store.display()))
                }
                (None, Some(from), Some(spec), Some(token_file)) => {
                    export_from_pod(&from, &spec, &token_file, &mut output)
                }
                _ => unreachable!(
                    "clap requires --data-dir or --from with --spec and --peer-token-file"
                ),
            };
            let summary = match summary {
                Ok(summary) => summary,
                Err(error) => {
                    drop(output);
                    if let Some(path) = &out {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(error);
                }
            };
            eprintln!(
                "image of definition {}: {} entries, sha256 {}",
                summary.definition, summary.entries, summary.sha256
            );
        }
        ImageCommand::Restore {
            spec,
            data_dir,
            image: path,
        } => {
            let (_, _, spec) = load_spec(&spec, Some("restore".into()), "default".into())?;
            let compiled = facet_bff::spec::compile(&spec)
                .map_err(|e| anyhow::anyhow!("invalid spec:\n{e}"))?;
            let store = data_dir.join("store.redb");
            anyhow::ensure!(
                !store.exists(),
                "{} already holds a store: restore into an empty data directory",
                data_dir.display()
            );
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let summary = image::restore_file(&store, &compiled.store_layout(), &path)
                .with_context(|| format!("restoring {}", path.display()))?;
            eprintln!(
                "restored {} entries (sha256 {}) into {}",
                summary.entries,
                summary.sha256,
                store.display()
            );
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (name, namespace, spec) = load_spec(&args.spec, args.name, args.namespace)?;
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
        restore_from: args.restore_from,
        peers: facet_bff::peer::copy::Peers {
            // An empty FACET_PEERS names no peer.
            addresses: args
                .peers
                .into_iter()
                .filter(|a| !a.trim().is_empty())
                .collect(),
            token_file: args.peer_token_file,
            own_ip: args.pod_ip,
        },
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
