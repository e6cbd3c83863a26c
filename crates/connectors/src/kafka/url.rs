//! `kafka://HOST:PORT[,HOST:PORT…][/TOPIC]` URLs, as the CLI takes them.

use std::fmt;
use std::str::FromStr;

/// The port a broker address without one gets.
pub const DEFAULT_PORT: u16 = 9092;

/// The longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// A parsed `kafka://` URL: the bootstrap brokers and, optionally, a topic.
///
/// The form is `kafka://HOST[:PORT][,HOST[:PORT]…][/TOPIC]`: one or more brokers separated by
/// commas (a missing port is [`DEFAULT_PORT`]; an IPv6 host is written in brackets, `[::1]:9092`),
/// then an optional topic. A trailing `/` alone means no topic. Queries, fragments, user
/// information and deeper paths are refused, so that a typo is an error rather than a surprise.
///
/// # Examples
/// ```
/// use clickpulse_connectors::kafka::KafkaUrl;
///
/// let url = KafkaUrl::parse("kafka://127.0.0.1:9092/clicks")?;
/// assert_eq!(url.brokers(), "127.0.0.1:9092");
/// assert_eq!(url.topic(), Some("clicks"));
///
/// let url: KafkaUrl = "kafka://k1,k2:19092".parse()?;
/// assert_eq!(url.brokers(), "k1:9092,k2:19092");
/// assert_eq!(url.topic(), None);
///
/// let err = KafkaUrl::parse("kafka://localhost:99999/clicks").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "kafka URL `kafka://localhost:99999/clicks`: port `99999` of broker `localhost:99999` \
///      is not a number in 1..=65535"
/// );
/// # Ok::<(), clickpulse_connectors::kafka::UrlError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KafkaUrl {
    brokers: Vec<(String, u16)>,
    topic: Option<String>,
}

/// Why a `kafka://` URL was refused; the message names the URL and the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The URL does not start with `kafka://`.
    #[error("`{url}` is not a kafka URL: it must start with `kafka://` (kafka://HOST:PORT/TOPIC)")]
    Scheme {
        /// The URL given.
        url: String,
    },
    /// No broker between `kafka://` and the topic.
    #[error("kafka URL `{url}` names no broker: expected kafka://HOST:PORT[/TOPIC]")]
    NoBroker {
        /// The URL given.
        url: String,
    },
    /// A broker address with an empty host (`kafka://:9092`, `kafka://a,,b`).
    #[error("kafka URL `{url}`: broker `{broker}` has no host")]
    EmptyHost {
        /// The URL given.
        url: String,
        /// The broker address at fault.
        broker: String,
    },
    /// A host with characters no host name or IP address has.
    #[error("kafka URL `{url}`: `{host}` is not a valid host name or IP address")]
    InvalidHost {
        /// The URL given.
        url: String,
        /// The host at fault.
        host: String,
    },
    /// A port that is not a number in `1..=65535`.
    #[error("kafka URL `{url}`: port `{port}` of broker `{broker}` is not a number in 1..=65535")]
    InvalidPort {
        /// The URL given.
        url: String,
        /// The broker address at fault.
        broker: String,
        /// The port text.
        port: String,
    },
    /// A topic name Kafka would refuse.
    #[error("kafka URL `{url}`: `{topic}` is not a valid Kafka topic name: {reason}")]
    InvalidTopic {
        /// The URL given.
        url: String,
        /// The topic at fault.
        topic: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Something a kafka URL does not have: a query, a fragment, user information, a deeper path.
    #[error(
        "kafka URL `{url}`: unexpected {what} `{part}` \
         (the form is kafka://HOST:PORT[,HOST:PORT...][/TOPIC])"
    )]
    Unexpected {
        /// The URL given.
        url: String,
        /// What kind of part (`query`, `fragment`, `user information`, `path`).
        what: &'static str,
        /// The part itself.
        part: String,
    },
}

impl KafkaUrl {
    /// Parses `kafka://HOST[:PORT][,HOST[:PORT]…][/TOPIC]`.
    ///
    /// # Errors
    /// A [`UrlError`] naming the URL and what is wrong with it.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let rest = strip_scheme(url).ok_or_else(|| UrlError::Scheme { url: url.into() })?;
        reject_extras(url, rest)?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(UrlError::NoBroker { url: url.into() });
        }
        if let Some((user, _)) = authority.split_once('@') {
            return Err(UrlError::Unexpected {
                url: url.into(),
                what: "user information",
                part: format!("{user}@"),
            });
        }
        let brokers = authority
            .split(',')
            .map(|b| parse_broker(url, b))
            .collect::<Result<Vec<_>, _>>()?;
        let topic = parse_topic(url, path)?;
        Ok(KafkaUrl { brokers, topic })
    }

    /// The bootstrap brokers as librdkafka takes them: `host:port,host:port`.
    pub fn brokers(&self) -> String {
        self.brokers
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The topic, when the URL names one.
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    /// The topic, or `default` when the URL names none.
    pub fn topic_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.topic.as_deref().unwrap_or(default)
    }
}

impl FromStr for KafkaUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KafkaUrl::parse(s)
    }
}

impl fmt::Display for KafkaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kafka://{}", self.brokers())?;
        if let Some(topic) = &self.topic {
            write!(f, "/{topic}")?;
        }
        Ok(())
    }
}

fn strip_scheme(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    scheme.eq_ignore_ascii_case("kafka").then_some(rest)
}

fn reject_extras(url: &str, rest: &str) -> Result<(), UrlError> {
    for (sep, what) in [('?', "query"), ('#', "fragment")] {
        if let Some(i) = rest.find(sep) {
            return Err(UrlError::Unexpected {
                url: url.into(),
                what,
                part: rest.get(i..).unwrap_or_default().into(),
            });
        }
    }
    Ok(())
}

fn parse_broker(url: &str, broker: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = split_host_port(broker);
    if host.is_empty() || host == "[]" {
        return Err(UrlError::EmptyHost {
            url: url.into(),
            broker: broker.into(),
        });
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        host.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    };
    if !host_ok {
        return Err(UrlError::InvalidHost {
            url: url.into(),
            host: host.into(),
        });
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| UrlError::InvalidPort {
                    url: url.into(),
                    broker: broker.into(),
                    port: p.into(),
                })?
        }
    };
    Ok((host.to_string(), port))
}

/// Splits `host:port`, `[v6]:port`, `host` and `[v6]`.
fn split_host_port(broker: &str) -> (&str, Option<&str>) {
    if broker.starts_with('[') {
        return match broker.find(']') {
            Some(end) => {
                let (host, rest) = broker.split_at(end + 1);
                (host, rest.strip_prefix(':'))
            }
            None => (broker, None),
        };
    }
    match broker.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (broker, None),
    }
}

fn parse_topic(url: &str, path: &str) -> Result<Option<String>, UrlError> {
    if path.is_empty() {
        return Ok(None);
    }
    if let Some(i) = path.find('/') {
        return Err(UrlError::Unexpected {
            url: url.into(),
            what: "path",
            part: path.get(i..).unwrap_or_default().into(),
        });
    }
    validate_topic(path).map_err(|reason| UrlError::InvalidTopic {
        url: url.into(),
        topic: path.into(),
        reason,
    })?;
    Ok(Some(path.to_string()))
}

/// Checks a topic name by Kafka's rules: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
///
/// # Errors
/// Why the name is refused.
pub(crate) fn validate_topic(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("it is empty");
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err("it is longer than 249 characters");
    }
    if topic == "." || topic == ".." {
        return Err("`.` and `..` are reserved");
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> KafkaUrl {
        KafkaUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn brokers_and_topic() {
        let u = ok("kafka://127.0.0.1:9092/clicks");
        assert_eq!(
            (u.brokers().as_str(), u.topic()),
            ("127.0.0.1:9092", Some("clicks"))
        );
        let u = ok("kafka://localhost");
        assert_eq!((u.brokers().as_str(), u.topic()), ("localhost:9092", None));
        let u = ok("kafka://a:1,b:2/");
        assert_eq!((u.brokers().as_str(), u.topic()), ("a:1,b:2", None));
        let u = ok("KAFKA://[::1]:19092/clickpulse.page_views");
        assert_eq!(u.brokers(), "[::1]:19092");
        assert_eq!(u.topic_or("x"), "clickpulse.page_views");
        assert_eq!(u.to_string(), "kafka://[::1]:19092/clickpulse.page_views");
        assert_eq!(ok(&u.to_string()), u);
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("http://h:1/t", "must start with `kafka://`"),
            ("h:9092/t", "must start with `kafka://`"),
            ("kafka:///t", "names no broker"),
            ("kafka://", "names no broker"),
            ("kafka://:9092/t", "broker `:9092` has no host"),
            ("kafka://a,,b/t", "broker `` has no host"),
            ("kafka://h:x/t", "port `x` of broker `h:x`"),
            ("kafka://h:0/t", "port `0` of broker `h:0`"),
            ("kafka://h:70000", "port `70000`"),
            ("kafka://h!:1/t", "`h!` is not a valid host"),
            (
                "kafka://h:1/a b",
                "`a b` is not a valid Kafka topic name: only ASCII",
            ),
            ("kafka://h:1/..", "`.` and `..` are reserved"),
            ("kafka://h:1/t/u", "unexpected path `/u`"),
            ("kafka://h:1/t?x=1", "unexpected query `?x=1`"),
            ("kafka://h:1/t#f", "unexpected fragment `#f`"),
            ("kafka://me@h:1/t", "unexpected user information `me@`"),
        ];
        for (url, expected) in cases {
            let err = KafkaUrl::parse(url).expect_err(url).to_string();
            assert!(err.contains(expected), "{url}: `{err}` lacks `{expected}`");
            assert!(err.contains(url), "{url}: `{err}` does not name the URL");
        }
        let long = format!("kafka://h:1/{}", "t".repeat(250));
        assert!(
            KafkaUrl::parse(&long)
                .expect_err("long")
                .to_string()
                .contains("longer than 249")
        );
    }
}
