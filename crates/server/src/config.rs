//! [`ServerConfig`]: the server's settings, with documented defaults.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::hub::{DEFAULT_HISTORY_LEN, HubConfig};

/// Settings of the HTTP server. Deserialisable from the `[server]` table of a config file
/// (unknown keys are errors); every field has a default.
///
/// # Examples
/// ```
/// use clickpulse_server::ServerConfig;
/// let config = ServerConfig { bind: "127.0.0.1:0".parse()?, ..ServerConfig::default() };
/// assert_eq!(config.history_len, 600);
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port ([`crate::ServerHandle::local_addr`]
    /// tells which). Default = `127.0.0.1:8080`.
    pub bind: SocketAddr,
    /// Batch messages each stream keeps for resuming clients. Default = 600. Applied when the
    /// hub is built from [`ServerConfig::hub_config`]; [`crate::serve`] uses the hub it is given.
    pub history_len: usize,
    /// Largest collector request body, in bytes; larger bodies get 413. Default = 1 MiB.
    pub body_limit: usize,
    /// Most events in one collector request; more get 413. Default = 1000.
    pub batch_limit: usize,
    /// Most events the collector appends in one group commit. Default = 10 000.
    pub max_group_events: usize,
    /// Directory of the built dashboard, served at `/`; when it has no `index.html` a
    /// built-in page says how to build it. Default = `dashboard/dist`.
    pub dashboard_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            history_len: DEFAULT_HISTORY_LEN,
            body_limit: 1 << 20,
            batch_limit: 1000,
            max_group_events: 10_000,
            dashboard_dir: PathBuf::from("dashboard/dist"),
        }
    }
}

impl ServerConfig {
    /// The hub settings these server settings imply.
    pub fn hub_config(&self) -> HubConfig {
        HubConfig {
            history_len: self.history_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_config_keeps_defaults_and_unknown_keys_fail() {
        let c: ServerConfig =
            serde_json::from_str(r#"{"bind":"0.0.0.0:9000","batch_limit":5}"#).expect("parses");
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.batch_limit, 5);
        assert_eq!(c.body_limit, ServerConfig::default().body_limit);
        assert!(serde_json::from_str::<ServerConfig>(r#"{"bnid":"x"}"#).is_err());
    }
}
