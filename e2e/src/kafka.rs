//! A real Apache Kafka broker (KRaft, combined mode) from its Maven artifacts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::pki::Pki;
use crate::{free_port, repo_root, wait_for};

/// The SCRAM user the broker's SASL_SSL listener knows.
pub const SCRAM_USER: &str = "facet";
pub const SCRAM_PASSWORD: &str = "facet-e2e-secret";

pub struct Broker {
    libs: PathBuf,
    dir: tempfile::TempDir,
    logs: PathBuf,
    port: u16,
    /// A second listener with TLS and SASL/SCRAM, as managed Kafka services have.
    secure_port: u16,
    /// A third listener that takes OAUTHBEARER tokens only (validated against an
    /// identity provider's JWKS), when started with [`Broker::start_with_oauth`].
    oauth: Option<OauthListener>,
    child: Option<Child>,
    starts: u32,
}

/// The broker jars: `FACET_KAFKA_LIBS`, or installed from Maven Central into the cache.
fn broker_libs() -> PathBuf {
    if let Ok(libs) = std::env::var("FACET_KAFKA_LIBS") {
        return PathBuf::from(libs);
    }
    let script = repo_root().join("e2e/tools/install-kafka.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("running install-kafka.sh");
    assert!(output.status.success(), "install-kafka.sh failed");
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

struct OauthListener {
    port: u16,
    jwks_uri: String,
}

impl Broker {
    /// Formats a new single-node cluster and starts it; logs go to `logs/kafka*.log`.
    /// A broker whose JVM exits while starting (seen once with two brokers starting
    /// side by side: the JVM left nothing in its log) is started afresh, on new
    /// ports, up to three times.
    pub fn start(logs: &Path) -> Broker {
        Broker::start_with(logs, None)
    }

    /// A broker with a listener more, [`Broker::oauth_bootstrap`], whose clients
    /// log in with OAUTHBEARER tokens signed by the key behind `jwks_uri`.
    pub fn start_with_oauth(logs: &Path, jwks_uri: &str) -> Broker {
        Broker::start_with(logs, Some(jwks_uri))
    }

    fn start_with(logs: &Path, jwks_uri: Option<&str>) -> Broker {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Broker::try_start(logs, jwks_uri) {
                Ok(broker) => return broker,
                Err(why) => failures.push(why),
            }
        }
        panic!("the Kafka broker did not start: {failures:?}");
    }

    fn try_start(logs: &Path, jwks_uri: Option<&str>) -> Result<Broker, String> {
        let libs = broker_libs();
        let dir = tempfile::tempdir().expect("creating the broker directory");
        let port = free_port();
        let secure_port = free_port();
        let controller = free_port();
        let oauth = jwks_uri.map(|jwks_uri| OauthListener {
            port: free_port(),
            jwks_uri: jwks_uri.to_string(),
        });
        let pki = Pki::new();
        let (cert, key) = pki.issue("kafka", None, &["127.0.0.1", "localhost"]);
        let keystore = dir.path().join("broker.pem");
        std::fs::write(&keystore, format!("{key}{cert}")).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
        let mut properties = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secure_port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secure_port}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT\n\
             sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             ssl.keystore.type=PEM\n\
             ssl.keystore.location={keystore}\n\
             log.dirs={data}\n\
             num.partitions=3\n\
             auto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             group.initial.rebalance.delay.ms=0\n",
            data = dir.path().join("data").display(),
            keystore = keystore.display(),
        );
        if let Some(oauth) = &oauth {
            properties = with_oauth_listener(&properties, oauth);
        }
        std::fs::write(dir.path().join("server.properties"), properties).unwrap();
        std::fs::write(
            dir.path().join("log4j2.properties"),
            "rootLogger.level=INFO\nrootLogger.appenderRef.out.ref=OUT\nappender.out.type=Console\n\
             appender.out.name=OUT\nappender.out.layout.type=PatternLayout\n\
             appender.out.layout.pattern=[%d] %p %m (%c)%n\n",
        )
        .unwrap();
        let mut broker = Broker {
            libs,
            dir,
            logs: logs.to_path_buf(),
            port,
            secure_port,
            oauth,
            child: None,
            starts: 0,
        };
        let format = broker
            .java("kafka.tools.StorageTool")
            .args([
                "format",
                "--standalone",
                "-t",
                "facet-e2e-cluster-0001",
                "--add-scram",
                &format!("SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"),
                "-c",
            ])
            .arg(broker.dir.path().join("server.properties"))
            .output()
            .expect("running the Kafka storage tool");
        assert!(
            format.status.success(),
            "formatting Kafka storage failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        broker.launch()?;
        Ok(broker)
    }

    fn java(&self, main: &str) -> Command {
        let mut command = Command::new("java");
        if let Some(oauth) = &self.oauth {
            // Kafka 4 fetches no JWKS or token URL that this list does not name.
            command.arg(format!(
                "-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={}",
                oauth.jwks_uri
            ));
        }
        command
            .arg("-Xmx512m")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.path().join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .arg(main);
        command
    }

    /// Starts the JVM and waits until the broker answers; an error if it exits first.
    fn launch(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log =
            std::fs::File::create(self.logs.join(format!("kafka-{}.log", self.starts))).unwrap();
        let child = self
            .java("kafka.Kafka")
            .arg(self.dir.path().join("server.properties"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the Kafka broker");
        self.child = Some(child);
        let bootstrap = self.bootstrap();
        let mut exited = None;
        wait_for(
            "the Kafka broker to answer",
            Duration::from_secs(90),
            || {
                if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                    exited = Some(status);
                    return true;
                }
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .create()
                    .unwrap();
                consumer
                    .fetch_metadata(None, Duration::from_secs(1))
                    .map(|m| !m.brokers().is_empty())
                    .unwrap_or(false)
            },
        );
        match exited {
            Some(status) => {
                self.child = None;
                Err(format!(
                    "the broker JVM exited with {status} while starting"
                ))
            }
            None => Ok(()),
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TLS + SASL/SCRAM listener, and the librdkafka properties a client needs
    /// for it with `password` (the broker's is [`SCRAM_PASSWORD`]).
    pub fn secure_bootstrap(&self, password: &str) -> (String, Vec<(String, String)>) {
        let properties = [
            ("security.protocol", "SASL_SSL".to_string()),
            ("sasl.mechanisms", "SCRAM-SHA-512".to_string()),
            ("sasl.username", SCRAM_USER.to_string()),
            ("sasl.password", password.to_string()),
            // Inline, as a Secret carries it: the operator's own clients take no
            // file paths from a tenant.
            (
                "ssl.ca.pem",
                std::fs::read_to_string(self.dir.path().join("ca.pem")).unwrap(),
            ),
        ];
        (
            format!("127.0.0.1:{}", self.secure_port),
            properties
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// The OAUTHBEARER listener, and the librdkafka properties that make a client
    /// fetch its own tokens from `token_uri` with a client id and secret (the
    /// OIDC client credentials method, which needs librdkafka built with curl).
    pub fn oauth_bootstrap(
        &self,
        token_uri: &str,
        client_id: &str,
        client_secret: &str,
    ) -> (String, Vec<(String, String)>) {
        let oauth = self
            .oauth
            .as_ref()
            .expect("a broker started with start_with_oauth");
        let properties = [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "OAUTHBEARER"),
            ("sasl.oauthbearer.method", "oidc"),
            ("sasl.oauthbearer.token.endpoint.url", token_uri),
            ("sasl.oauthbearer.client.id", client_id),
            ("sasl.oauthbearer.client.secret", client_secret),
        ];
        (
            format!("127.0.0.1:{}", oauth.port),
            properties
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Stops the broker the hard way (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts the broker again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch().expect("restarting the Kafka broker");
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.create_topic_with(topic, partitions, &[]);
    }

    /// As [`Broker::create_topic`], with topic configs (`retention.ms`, say).
    pub fn create_topic_with(&self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        for (name, value) in configs {
            new_topic = new_topic.set(name, value);
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let runtime = tokio_runtime();
        let results = runtime
            .block_on(admin.create_topics(
                &[new_topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .expect("creating a topic");
        for result in results {
            result.unwrap_or_else(|(topic, e)| panic!("creating topic {topic}: {e}"));
        }
    }

    /// Grows a topic to `partitions` partitions; returns once the broker's metadata
    /// shows them (producers created afterwards can write to them).
    pub fn add_partitions(&self, topic: &str, partitions: usize) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let results = tokio_runtime()
            .block_on(admin.create_partitions(
                &[NewPartitions::new(topic, partitions)],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .expect("adding partitions");
        for result in results {
            result.unwrap_or_else(|(topic, e)| panic!("adding partitions to {topic}: {e}"));
        }
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        crate::wait_for(
            "the broker's metadata to show the new partitions",
            Duration::from_secs(30),
            || {
                consumer
                    .fetch_metadata(Some(topic), Duration::from_secs(5))
                    .is_ok_and(|m| {
                        m.topics()
                            .iter()
                            .any(|t| t.partitions().len() == partitions)
                    })
            },
        );
    }

    /// Whether a consumer group has any state on the broker.
    pub fn group_exists(&self, group: &str) -> bool {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let list = consumer
            .fetch_group_list(Some(group), Duration::from_secs(10))
            .expect("listing groups");
        list.groups()
            .iter()
            .any(|g| g.name() == group && g.state() != "Dead")
    }

    pub fn producer(&self) -> TestProducer {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .expect("creating a producer");
        TestProducer(producer)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A producer that sends keyed JSON values and waits for them all.
pub struct TestProducer(ThreadedProducer<DefaultProducerContext>);

impl TestProducer {
    pub fn send(&self, topic: &str, key: &str, value: &[u8]) {
        self.send_record(BaseRecord::to(topic).key(key).payload(value));
    }

    /// Sends to one partition, whatever the key hashes to.
    pub fn send_to(&self, topic: &str, partition: i32, key: &str, value: &[u8]) {
        self.send_record(
            BaseRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(value),
        );
    }

    fn send_record(&self, mut record: BaseRecord<'_, str, [u8]>) {
        let topic = record.topic;
        loop {
            match self.0.send(record) {
                Ok(()) => return,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
    }

    pub fn flush(&self) {
        self.0
            .flush(Duration::from_secs(60))
            .expect("flushing the producer");
    }
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `properties` with a SASL_PLAINTEXT listener named OAUTH that accepts only
/// OAUTHBEARER, checked by Kafka's own validator: signature from the JWKS, `exp`,
/// `iat`, audience and issuer.
fn with_oauth_listener(properties: &str, oauth: &OauthListener) -> String {
    let port = oauth.port;
    let mut lines: Vec<String> = properties
        .lines()
        .map(|line| {
            let extra = match line.split_once('=') {
                Some(("listeners" | "advertised.listeners", _)) => {
                    format!(",OAUTH://127.0.0.1:{port}")
                }
                Some(("listener.security.protocol.map", _)) => ",OAUTH:SASL_PLAINTEXT".into(),
                _ => String::new(),
            };
            format!("{line}{extra}")
        })
        .collect();
    let validator = "org.apache.kafka.common.security.oauthbearer";
    lines.extend([
        "listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER".to_string(),
        format!("listener.name.oauth.oauthbearer.sasl.jaas.config={validator}.OAuthBearerLoginModule required;"),
        format!("listener.name.oauth.oauthbearer.sasl.server.callback.handler.class={validator}.OAuthBearerValidatorCallbackHandler"),
        format!("sasl.oauthbearer.jwks.endpoint.url={}", oauth.jwks_uri),
        format!("sasl.oauthbearer.expected.audience={}", crate::identity::KAFKA_AUDIENCE),
        format!("sasl.oauthbearer.expected.issuer={}", crate::identity::ISSUER),
    ]);
    lines.join("\n") + "\n"
}
