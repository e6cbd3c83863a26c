//! The job file: built-in defaults, then a TOML file, then `CLICKPULSE__SECTION__KEY`
//! environment variables, then command-line flags (applied by the caller). Unknown keys and bad
//! values are errors that name the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clickpulse_connectors::kafka::{DEFAULT_TOPIC_PREFIX, KafkaUrl};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A job-file problem; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` does not exist.
    #[error("job file {0} does not exist")]
    Missing(PathBuf),
    /// A key is unknown or its value has the wrong type (figment's message names the key).
    #[error("job configuration: {0}")]
    Invalid(String),
    /// A value is out of range or inconsistent with another.
    #[error("job configuration: `{key}` {reason}")]
    Value {
        /// The key, as `section.key`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// The whole job configuration. Every field has a default, so an empty file is a valid job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobConfig {
    /// The job's name: its checkpoints live under `clickpulse-data/checkpoints/<name>` unless
    /// `checkpoint.dir` says otherwise. Default = "standard".
    pub name: String,
    /// How the engine runs.
    pub engine: EngineConfig,
    /// Where clicks come from.
    pub input: InputConfig,
    /// Window sizes and limits of the standard streams.
    pub streams: StreamsConfig,
    /// The visitor-history table `segments` joins with.
    pub history: HistoryConfig,
    /// Where results go besides the WebSocket hub.
    pub output: OutputConfig,
    /// Checkpoints and exactly-once restarts.
    pub checkpoint: CheckpointConfig,
    /// Running the job as several processes.
    pub cluster: ClusterConfig,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            name: "standard".into(),
            engine: EngineConfig::default(),
            input: InputConfig::default(),
            streams: StreamsConfig::default(),
            history: HistoryConfig::default(),
            output: OutputConfig::default(),
            checkpoint: CheckpointConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

/// `[checkpoint]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Whether the job keeps an offset log and checkpoints, and resumes from them when it
    /// starts. Default = true.
    pub enabled: bool,
    /// Where checkpoints and the offset log live: a directory, or
    /// `s3://BUCKET/PREFIX?endpoint=URL&region=R&allow_http=true` (credentials from the
    /// `AWS_*` environment). Default: unset, meaning `clickpulse-data/checkpoints/<name>`.
    pub dir: Option<String>,
    /// How often: a number of batches (`"10"`) or a duration (`"10s"`). Default = "10s".
    pub interval: String,
    /// How many complete checkpoints are kept. Default = 3.
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            enabled: true,
            dir: None,
            interval: "10s".into(),
            keep: 3,
        }
    }
}

impl CheckpointConfig {
    /// The interval, parsed.
    ///
    /// # Errors
    /// [`ConfigError::Value`] naming `checkpoint.interval`.
    pub fn interval(
        &self,
    ) -> Result<clickpulse_engine::checkpoint::CheckpointInterval, ConfigError> {
        self.interval.parse().map_err(|reason| ConfigError::Value {
            key: "checkpoint.interval".into(),
            reason,
        })
    }

    /// Where checkpoints of the job `name` live: `dir`, or `clickpulse-data/checkpoints/<name>`.
    pub fn location(&self, name: &str) -> String {
        self.dir.clone().unwrap_or_else(|| {
            PathBuf::from("clickpulse-data/checkpoints")
                .join(name)
                .to_string_lossy()
                .into_owned()
        })
    }
}

/// `[cluster]`: the job as several processes of `engine.workers` workers each, over timely's
/// cluster communication. Results are gathered on process 0, which runs the sinks and the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// A host file: one `host:port` per line, process 0 first (blank lines and `#` comments
    /// are skipped). Every process gets the same file and job file. Unset = one process.
    pub hosts: Option<PathBuf>,
    /// This process's index in `hosts`.
    pub process: Option<usize>,
    /// Starts this many processes on this machine over loopback, under a supervisor that
    /// restarts them all from the latest checkpoint when one fails. Default = 1 (no cluster).
    pub local_processes: usize,
    /// How long the processes wait for each other at start. Default = 60s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How many times `local_processes` restarts a failed job before giving up. Default = 3.
    pub max_restarts: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            hosts: None,
            process: None,
            local_processes: 1,
            connect_timeout: Duration::from_secs(60),
            max_restarts: 3,
        }
    }
}

impl ClusterConfig {
    /// Whether this process is one of several (a host file is given).
    pub fn is_member(&self) -> bool {
        self.hosts.is_some()
    }

    /// Checks that an index comes with a host file, and that the host file and the index are
    /// good ([`ClusterConfig::addresses`]). Not part of [`JobConfig::validate`], which runs
    /// before command-line flags apply: an index from the environment may go with a host file
    /// from a flag.
    ///
    /// # Errors
    /// [`ConfigError::Value`] naming `cluster.process` or `cluster.hosts`.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.process.is_some() && self.hosts.is_none() {
            return Err(ConfigError::Value {
                key: "cluster.process".into(),
                reason: "needs cluster.hosts (the host file it is an index into)".into(),
            });
        }
        self.addresses().map(|_| ())
    }

    /// Every process's address from the host file.
    ///
    /// # Errors
    /// [`ConfigError::Value`] naming `cluster.hosts` when the file cannot be read, has no
    /// address, or an address is not `host:port`; naming `cluster.process` when the index is
    /// not one of its lines.
    ///
    /// # Examples
    /// ```
    /// use std::io::Write;
    /// let mut f = tempfile::NamedTempFile::new().unwrap();
    /// writeln!(f, "# three processes\n10.0.0.1:2101\n\n10.0.0.2:2101\n10.0.0.3:2101").unwrap();
    /// let cluster = clickpulse_job::config::ClusterConfig {
    ///     hosts: Some(f.path().to_path_buf()),
    ///     process: Some(2),
    ///     ..Default::default()
    /// };
    /// assert_eq!(cluster.addresses().unwrap()[2], "10.0.0.3:2101");
    /// ```
    pub fn addresses(&self) -> Result<Vec<String>, ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::Value {
            key: key.into(),
            reason,
        };
        let Some(path) = &self.hosts else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("cluster.hosts", format!("{}: {e}", path.display())))?;
        let mut addresses = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let port_ok = line
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(bad(
                    "cluster.hosts",
                    format!(
                        "{} line {}: `{line}` is not host:port",
                        path.display(),
                        n + 1
                    ),
                ));
            }
            addresses.push(line.to_string());
        }
        if addresses.is_empty() {
            return Err(bad(
                "cluster.hosts",
                format!("{} lists no process", path.display()),
            ));
        }
        match self.process {
            None => Err(bad(
                "cluster.process",
                "is required with cluster.hosts (this process's index in the host file)".into(),
            )),
            Some(p) if p >= addresses.len() => Err(bad(
                "cluster.process",
                format!(
                    "is {p}, but {} lists {} processes (0..{})",
                    path.display(),
                    addresses.len(),
                    addresses.len()
                ),
            )),
            Some(_) => Ok(addresses),
        }
    }
}

/// `[engine]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Key groups keyed state is split into: a checkpoint restores with any worker count up to
    /// this many, and only with the same count of groups. Default = 256.
    pub key_groups: u32,
    /// Micro-batch interval. Default = "1s".
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// Worker threads. Default = 2.
    pub workers: usize,
    /// Most records one batch takes from one partition. Default = 50000.
    pub max_records_per_partition: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            key_groups: clickpulse_engine::DEFAULT_KEY_GROUPS,
            batch_interval: Duration::from_secs(1),
            workers: 2,
            max_records_per_partition: 50_000,
        }
    }
}

/// `[input]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Directory of the embedded log. Default = "clickpulse-data/log".
    pub log: PathBuf,
    /// Topic holding the clicks. Default = "clicks".
    pub topic: String,
    /// Partitions when the topic is created. Default = 4.
    pub partitions: u32,
    /// Read from Kafka instead of the embedded log: `kafka://HOST:PORT/TOPIC` (a URL without a
    /// topic reads `input.topic`); `log` is then not used, and `partitions` only when the topic
    /// is created (by `run --serve`, whose collector writes to it). Default: unset.
    pub kafka: Option<String>,
    /// The Kafka consumer group progress is committed to, only so that lag tools can see it
    /// (offsets belong to the engine). Default = "clickpulse".
    pub kafka_group_id: String,
    /// Where Kafka records that do not decode are copied; `""` copies none (they are still
    /// counted and written to the `dead_letters` stream). Created when missing.
    /// Default: unset, meaning `<topic>.dlq`.
    pub kafka_dead_letter_topic: Option<String>,
    /// How far behind the highest event time seen a click may be and still count. Default = "0s".
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// How long a partition may go without clicks before it stops holding the watermark back.
    /// Default = "5s".
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            log: PathBuf::from("clickpulse-data/log"),
            topic: "clicks".into(),
            partitions: 4,
            kafka: None,
            kafka_group_id: "clickpulse".into(),
            kafka_dead_letter_topic: None,
            allowed_lateness: Duration::ZERO,
            idle_timeout: Duration::from_secs(5),
        }
    }
}

/// `[streams]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// `page_views` tumbling window. Default = "1s".
    #[serde(with = "humantime_serde")]
    pub page_views_window: Duration,
    /// `page_views_30s` window length. Default = "30s".
    #[serde(with = "humantime_serde")]
    pub page_views_30s_window: Duration,
    /// `page_views_30s` slide. Default = "5s".
    #[serde(with = "humantime_serde")]
    pub page_views_30s_slide: Duration,
    /// Urls per `top_pages` window. Default = 10.
    pub top_n: usize,
    /// A session ends after this long without a click. Default = "30m".
    #[serde(with = "humantime_serde")]
    pub session_gap: Duration,
    /// `active_visitors` tumbling window. Default = "1m".
    #[serde(with = "humantime_serde")]
    pub active_visitors_window: Duration,
    /// How `active_visitors` counts: `"exact"` (every visitor id of the window is kept) or
    /// `"hll"` (a HyperLogLog estimate: fixed memory per window, for very many visitors).
    /// Default = "exact".
    pub active_visitors_count: DistinctCount,
    /// HyperLogLog precision for `active_visitors_count = "hll"`, 4 to 18: `2^p` registers, a
    /// standard error of about `1.04 / sqrt(2^p)` (0.8% at 14). Default = 14.
    pub active_visitors_hll_precision: u8,
    /// `segments` tumbling window (by the session's last click). Default = "1m".
    #[serde(with = "humantime_serde")]
    pub segments_window: Duration,
    /// `trending` window, compared with the window before it. Default = "1m".
    #[serde(with = "humantime_serde")]
    pub trending_window: Duration,
    /// Items per kind and `trending` window. Default = 10.
    pub trending_top: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            page_views_window: Duration::from_secs(1),
            page_views_30s_window: Duration::from_secs(30),
            page_views_30s_slide: Duration::from_secs(5),
            top_n: 10,
            session_gap: Duration::from_secs(30 * 60),
            active_visitors_window: Duration::from_secs(60),
            active_visitors_count: DistinctCount::Exact,
            active_visitors_hll_precision: 14,
            segments_window: Duration::from_secs(60),
            trending_window: Duration::from_secs(60),
            trending_top: 10,
        }
    }
}

impl StreamsConfig {
    /// Whether `page_views_30s`' slide is a whole number of `page_views` windows, so that its
    /// counts can be summed from `page_views`' closed windows (both are aligned to the epoch).
    pub fn page_views_30s_slide_fits_page_views(&self) -> bool {
        fits(self.page_views_window, self.page_views_30s_slide)
    }

    /// Whether `trending`'s window is a whole number of `page_views` windows, so that its page
    /// counts can be summed from `page_views`' closed windows.
    pub fn trending_window_fits_page_views(&self) -> bool {
        fits(self.page_views_window, self.trending_window)
    }
}

/// Whether `coarse` is a whole, nonzero number of `fine`s, in the milliseconds windows work in.
fn fits(fine: Duration, coarse: Duration) -> bool {
    let fine = fine.as_millis();
    fine > 0 && coarse.as_millis().is_multiple_of(fine)
}

/// How distinct visitors are counted (`streams.active_visitors_count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistinctCount {
    /// Exactly: each worker keeps the window's visitor ids it owns.
    Exact,
    /// A HyperLogLog estimate.
    Hll,
}

/// `[history]`: the visitor-history table. With neither `csv` nor `postgres`, the demo table is
/// generated in memory (see [`crate::history::demo_history`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// A CSV file with header `visitor_id,lifetime_visits,segment`. Default: unset.
    pub csv: Option<PathBuf>,
    /// A PostgreSQL connection string (`postgresql://user@host/db`). Default: unset.
    pub postgres: Option<String>,
    /// The PostgreSQL table (columns visitor_id, lifetime_visits, segment). Default = "visitor_history".
    pub table: String,
    /// How often the table is reloaded. Default = "5m".
    #[serde(with = "humantime_serde")]
    pub reload: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            csv: None,
            postgres: None,
            table: "visitor_history".into(),
            reload: Duration::from_secs(300),
        }
    }
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Write each stream's batches as JSON Lines under this directory. Default: unset (no files).
    pub dir: Option<PathBuf>,
    /// Also write results to Kafka: `kafka://HOST:PORT` (brokers only, no topic), one topic per
    /// stream named `<kafka_topic_prefix><stream>`, created when missing. Default: unset.
    pub kafka: Option<String>,
    /// The prefix of the result topics in Kafka. Default = "clickpulse.".
    pub kafka_topic_prefix: String,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: None,
            kafka: None,
            kafka_topic_prefix: DEFAULT_TOPIC_PREFIX.into(),
        }
    }
}

impl InputConfig {
    /// The Kafka dead-letter topic for input `topic`: `kafka_dead_letter_topic`, `<topic>.dlq`
    /// when unset, `None` when set to `""`.
    ///
    /// # Examples
    /// ```
    /// let mut input = clickpulse_job::config::InputConfig::default();
    /// assert_eq!(input.dead_letter_topic_for("clicks").as_deref(), Some("clicks.dlq"));
    /// input.kafka_dead_letter_topic = Some(String::new());
    /// assert_eq!(input.dead_letter_topic_for("clicks"), None);
    /// ```
    pub fn dead_letter_topic_for(&self, topic: &str) -> Option<String> {
        match self.kafka_dead_letter_topic.as_deref() {
            None => Some(format!("{topic}.dlq")),
            Some("") => None,
            Some(t) => Some(t.to_string()),
        }
    }
}

impl JobConfig {
    /// What identifies the job for its checkpoints: every `streams` setting and the input topic.
    /// A checkpoint taken with other values is refused (the state would not mean the same);
    /// workers, the batch interval, outputs and the history table may change between runs.
    ///
    /// # Examples
    /// ```
    /// let mut cfg = clickpulse_job::JobConfig::default();
    /// let before = cfg.fingerprint();
    /// assert_eq!(before["streams.session_gap"], "\"30m\"");
    /// cfg.engine.workers = 4;
    /// assert_eq!(cfg.fingerprint(), before);
    /// cfg.streams.top_n = 5;
    /// assert_ne!(cfg.fingerprint(), before);
    /// ```
    pub fn fingerprint(&self) -> std::collections::BTreeMap<String, String> {
        let mut out = std::collections::BTreeMap::new();
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&self.streams) {
            for (k, v) in fields {
                out.insert(format!("streams.{k}"), v.to_string());
            }
        }
        let topic = match self.input.kafka.as_deref().map(KafkaUrl::parse) {
            Some(Ok(url)) => format!("kafka {}", url.topic_or(&self.input.topic)),
            _ => format!("log {}", self.input.topic),
        };
        out.insert("input.topic".into(), topic);
        out
    }

    /// Defaults, then `file` (when given), then `CLICKPULSE__SECTION__KEY` variables; validated.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or the key.
    ///
    /// # Examples
    /// ```
    /// use std::io::Write;
    /// use clickpulse_job::JobConfig;
    /// let mut f = tempfile::NamedTempFile::new().unwrap();
    /// writeln!(f, "[streams]\ntop_n = 5\nsession_gap = \"10m\"").unwrap();
    /// let cfg = JobConfig::load(Some(f.path())).unwrap();
    /// assert_eq!(cfg.streams.top_n, 5);
    /// assert_eq!(cfg.streams.session_gap.as_secs(), 600);
    ///
    /// let mut g = tempfile::NamedTempFile::new().unwrap();
    /// writeln!(g, "[streams]\ntop_m = 5").unwrap();
    /// let err = JobConfig::load(Some(g.path())).unwrap_err().to_string();
    /// assert!(err.contains("top_m"), "{err}");
    /// ```
    pub fn load(file: Option<&Path>) -> Result<JobConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(JobConfig::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("CLICKPULSE__").split("__"));
        let cfg: JobConfig = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and relations between values.
    ///
    /// # Errors
    /// [`ConfigError::Value`] naming the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError::Value {
                key: key.into(),
                reason,
            })
        };
        let c = &self.cluster;
        if c.local_processes == 0 || c.local_processes > 64 {
            return bad("cluster.local_processes", "must be 1 to 64".into());
        }
        if c.local_processes > 1 && c.hosts.is_some() {
            return bad(
                "cluster.local_processes",
                "starts processes on this machine; it does not go with cluster.hosts".into(),
            );
        }
        let e = &self.engine;
        if e.batch_interval < Duration::from_millis(1) {
            return bad("engine.batch_interval", "must be at least 1ms".into());
        }
        if e.workers == 0 {
            return bad("engine.workers", "must be at least 1".into());
        }
        if e.key_groups == 0 || e.key_groups > 65_536 {
            return bad("engine.key_groups", "must be 1 to 65536".into());
        }
        if e.workers > e.key_groups as usize {
            return bad(
                "engine.workers",
                format!(
                    "is {}, more than engine.key_groups ({})",
                    e.workers, e.key_groups
                ),
            );
        }
        self.checkpoint.interval()?;
        if self.checkpoint.keep == 0 {
            return bad("checkpoint.keep", "must be at least 1".into());
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || self.name.starts_with('.')
        {
            return bad(
                "name",
                format!("`{}` must be letters, digits, `-`, `_` or `.`", self.name),
            );
        }
        if e.max_records_per_partition == 0 {
            return bad(
                "engine.max_records_per_partition",
                "must be at least 1".into(),
            );
        }
        if self.input.partitions == 0 {
            return bad("input.partitions", "must be at least 1".into());
        }
        let s = &self.streams;
        for (key, d) in [
            ("streams.page_views_window", s.page_views_window),
            ("streams.page_views_30s_window", s.page_views_30s_window),
            ("streams.page_views_30s_slide", s.page_views_30s_slide),
            ("streams.session_gap", s.session_gap),
            ("streams.active_visitors_window", s.active_visitors_window),
            ("streams.segments_window", s.segments_window),
            ("streams.trending_window", s.trending_window),
        ] {
            if d < Duration::from_millis(1) {
                return bad(key, format!("is {d:?}; must be at least 1ms"));
            }
            // Windows work in milliseconds: a fraction would be cut off, differently for a
            // window and for the slide or the pane it is built from.
            if !d.subsec_nanos().is_multiple_of(1_000_000) {
                return bad(
                    key,
                    format!("is {d:?}; must be a whole number of milliseconds"),
                );
            }
        }
        if !s
            .page_views_30s_window
            .as_millis()
            .is_multiple_of(s.page_views_30s_slide.as_millis())
        {
            return bad(
                "streams.page_views_30s_window",
                "must be a multiple of streams.page_views_30s_slide".into(),
            );
        }
        if !(4..=18).contains(&s.active_visitors_hll_precision) {
            return bad(
                "streams.active_visitors_hll_precision",
                format!("is {}; must be 4 to 18", s.active_visitors_hll_precision),
            );
        }
        if s.top_n == 0 || s.trending_top == 0 {
            return bad(
                "streams.top_n",
                "and streams.trending_top must be at least 1".into(),
            );
        }
        if self.history.csv.is_some() && self.history.postgres.is_some() {
            return bad(
                "history.csv",
                "and history.postgres are both set; choose one".into(),
            );
        }
        if !valid_table_name(&self.history.table) {
            return bad(
                "history.table",
                "must be a plain (optionally schema-qualified) identifier".into(),
            );
        }
        self.validate_kafka()
    }

    /// Checks the Kafka keys: URLs that parse, a topic only where one belongs, names Kafka
    /// accepts.
    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError::Value {
                key: key.into(),
                reason,
            })
        };
        let input = &self.input;
        if let Some(url) = &input.kafka {
            let url = match KafkaUrl::parse(url) {
                Ok(u) => u,
                Err(e) => return bad("input.kafka", e.to_string()),
            };
            let topic = url.topic_or(&input.topic);
            if let Some(dlq) = input.dead_letter_topic_for(topic)
                && let Err(reason) = check_topic_name(&dlq)
            {
                return bad("input.kafka_dead_letter_topic", format!("`{dlq}` {reason}"));
            }
        }
        if input.kafka_group_id.trim().is_empty() {
            return bad("input.kafka_group_id", "must not be empty".into());
        }
        let output = &self.output;
        if let Some(url) = &output.kafka {
            match KafkaUrl::parse(url) {
                Err(e) => return bad("output.kafka", e.to_string()),
                Ok(u) if u.topic().is_some() => {
                    return bad(
                        "output.kafka",
                        format!(
                            "`{url}` names a topic; give brokers only (kafka://HOST:PORT): \
                             the topics are output.kafka_topic_prefix + the stream name"
                        ),
                    );
                }
                Ok(_) => {}
            }
        }
        let streams = crate::STREAMS
            .iter()
            .chain(&["late_events", "dead_letters"]);
        for stream in streams {
            let topic = format!("{}{stream}", output.kafka_topic_prefix);
            if let Err(reason) = check_topic_name(&topic) {
                return bad(
                    "output.kafka_topic_prefix",
                    format!("makes the topic name `{topic}`, which {reason}"),
                );
            }
        }
        Ok(())
    }
}

/// Kafka's topic-name rules: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic_name(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() || topic == "." || topic == ".." {
        return Err("is not a valid Kafka topic name");
    }
    if topic.len() > 249 {
        return Err("is longer than Kafka's 249 characters");
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err("has characters Kafka refuses (only ASCII letters, digits, `.`, `_`, `-`)");
    }
    Ok(())
}

/// Letters, digits, `_`, one optional `schema.` prefix: safe to splice into SQL.
pub(crate) fn valid_table_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !p.starts_with(|c: char| c.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let cfg = JobConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.streams.page_views_30s_window, Duration::from_secs(30));
        assert_eq!(cfg.streams.page_views_30s_slide, Duration::from_secs(5));
        assert_eq!(cfg.streams.session_gap, Duration::from_secs(1800));
        assert_eq!(cfg.streams.top_n, 10);
    }

    #[test]
    fn coarser_windows_fit_page_views_by_whole_windows() {
        let mut s = StreamsConfig::default();
        assert!(s.page_views_30s_slide_fits_page_views() && s.trending_window_fits_page_views());
        s.page_views_window = Duration::from_secs(4);
        assert!(!s.page_views_30s_slide_fits_page_views());
        assert!(s.trending_window_fits_page_views());
        s.page_views_window = Duration::from_secs(7);
        assert!(!s.page_views_30s_slide_fits_page_views());
        // Whole windows of 30 s, but not of the 5 s slide: windows would straddle its panes.
        s.page_views_window = Duration::from_secs(10);
        assert!(!s.page_views_30s_slide_fits_page_views());
        assert!(s.trending_window_fits_page_views());
        s.page_views_window = Duration::from_micros(10);
        assert!(!s.trending_window_fits_page_views(), "under a millisecond");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut cfg = JobConfig::default();
        cfg.streams.page_views_30s_slide = Duration::from_secs(7);
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("streams.page_views_30s_window"), "{err}");

        let mut cfg = JobConfig::default();
        cfg.streams.trending_window = Duration::from_micros(1_500);
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("streams.trending_window"), "{err}");
        assert!(err.contains("whole number of milliseconds"), "{err}");

        let mut cfg = JobConfig::default();
        cfg.engine.workers = 0;
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("engine.workers")
        );

        for precision in [3, 19] {
            let mut cfg = JobConfig::default();
            cfg.streams.active_visitors_hll_precision = precision;
            let err = cfg.validate().unwrap_err().to_string();
            assert!(
                err.contains("streams.active_visitors_hll_precision"),
                "{err}"
            );
        }

        let mut cfg = JobConfig::default();
        cfg.history.table = "x; drop table y".into();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("history.table")
        );
    }

    #[test]
    fn wrong_types_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(&path, "[engine]\nworkers = \"two\"\n").unwrap();
        let err = JobConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("workers"), "{err}");
        std::fs::write(&path, "[engine]\nbatch_interval = \"soon\"\n").unwrap();
        let err = JobConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("batch_interval"), "{err}");
        std::fs::write(&path, "[streams]\nactive_visitors_count = \"approx\"\n").unwrap();
        let err = JobConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("active_visitors_count"), "{err}");
        std::fs::write(&path, "[streams]\nactive_visitors_count = \"hll\"\n").unwrap();
        let cfg = JobConfig::load(Some(&path)).unwrap();
        assert_eq!(cfg.streams.active_visitors_count, DistinctCount::Hll);
        let missing = dir.path().join("nope.toml");
        assert!(matches!(
            JobConfig::load(Some(&missing)),
            Err(ConfigError::Missing(_))
        ));
    }

    #[test]
    fn table_names() {
        assert!(valid_table_name("visitor_history"));
        assert!(valid_table_name("public.visitor_history"));
        assert!(!valid_table_name("a.b.c"));
        assert!(!valid_table_name("1abc"));
        assert!(!valid_table_name(""));
    }

    #[test]
    fn kafka_keys_default_load_and_validate() {
        let cfg = JobConfig::default();
        assert_eq!(cfg.input.kafka_group_id, "clickpulse");
        assert_eq!(cfg.input.kafka_dead_letter_topic, None);
        assert_eq!(cfg.output.kafka_topic_prefix, "clickpulse.");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(
            &path,
            "[input]\nkafka = \"kafka://127.0.0.1:9092/clicks\"\nkafka_group_id = \"g\"\n\
             kafka_dead_letter_topic = \"\"\n[output]\nkafka = \"kafka://127.0.0.1:9092\"\n\
             kafka_topic_prefix = \"results-\"\n",
        )
        .unwrap();
        let cfg = JobConfig::load(Some(&path)).unwrap();
        assert_eq!(
            cfg.input.kafka.as_deref(),
            Some("kafka://127.0.0.1:9092/clicks")
        );
        assert_eq!(cfg.input.kafka_group_id, "g");
        assert_eq!(cfg.input.dead_letter_topic_for("clicks"), None);
        assert_eq!(cfg.output.kafka.as_deref(), Some("kafka://127.0.0.1:9092"));
        assert_eq!(cfg.output.kafka_topic_prefix, "results-");
    }

    #[test]
    fn bad_kafka_values_name_their_key() {
        let cases: [(&str, fn(&mut JobConfig)); 6] = [
            ("input.kafka", |c| {
                c.input.kafka = Some("http://h:1/t".into())
            }),
            ("input.kafka_group_id", |c| {
                c.input.kafka_group_id = " ".into()
            }),
            ("input.kafka_dead_letter_topic", |c| {
                c.input.kafka = Some("kafka://h:1/t".into());
                c.input.kafka_dead_letter_topic = Some("bad topic".into());
            }),
            ("output.kafka", |c| {
                c.output.kafka = Some("kafka://h:0".into())
            }),
            ("output.kafka", |c| {
                c.output.kafka = Some("kafka://h:1/topic".into())
            }),
            ("output.kafka_topic_prefix", |c| {
                c.output.kafka_topic_prefix = "a/b.".into()
            }),
        ];
        for (key, set) in cases {
            let mut cfg = JobConfig::default();
            set(&mut cfg);
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
    }
}
