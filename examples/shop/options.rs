//! The shop's command line: [`Options`] and the usage text.

use std::time::Duration;

use tandem::redis::RedisSpec;
use tandem::{Concurrency, Mode, NodeSpec, Route};

/// The `--help` text, also printed after a usage error.
pub const USAGE: &str = "usage: shop [--listen ADDR] [--mode sticky|non-sticky] [--memcached NODESPEC | --redis SPEC] \
[--tls-ca FILE] [--wait-replicas N] [--failover-nodes IDS] [--route NAME] [--codec speedy|json|msgpack] [--concurrency none|lock|merge] \
[--max-inactive SECS] [--backup async|sync] [--secure-cookie]";

/// How long a write waits for its replica acknowledgements with `--wait-replicas`
/// (on top of the store's 500 ms operation timeout). A write acknowledged by fewer
/// replicas in time fails: a non-sticky commit answers 503, a `--backup sync`
/// backup reports failed, so that nothing is acknowledged that a failover may lose.
pub const WAIT_TIMEOUT: Duration = Duration::from_millis(500);

/// The codec the shop stores attribute values with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecChoice {
    /// speedy (the default).
    Speedy,
    /// JSON.
    Json,
    /// MessagePack.
    Msgpack,
}

/// The command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The address to serve on.
    pub listen: String,
    /// Sticky or non-sticky.
    pub mode: Mode,
    /// The memcached node spec; none runs over the in-process store.
    pub memcached: Option<String>,
    /// The Redis spec, instead of memcached.
    pub redis: Option<String>,
    /// The CA file that verifies the remote tier's certificate.
    pub tls_ca: Option<String>,
    /// The durable setting (`--wait-replicas N`, Redis only): each write waits for
    /// this many replica acknowledgements, for at most [`WAIT_TIMEOUT`]; `None`:
    /// writes do not wait.
    pub wait_replicas: Option<u32>,
    /// The node ids used only while every other node is down.
    pub failover_nodes: Option<String>,
    /// This server's route (sticky load balancing).
    pub route: Option<String>,
    /// The codec of attribute values.
    pub codec: CodecChoice,
    /// How concurrent requests of one session are reconciled.
    pub concurrency: Concurrency,
    /// The max inactive interval, in seconds.
    pub max_inactive: u64,
    /// Whether backups are written before the commit returns.
    pub backup_sync: bool,
    /// Whether the cookie is marked `Secure`.
    pub secure_cookie: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: "127.0.0.1:8080".into(),
            mode: Mode::Sticky,
            memcached: None,
            redis: None,
            tls_ca: None,
            wait_replicas: None,
            failover_nodes: None,
            route: None,
            codec: CodecChoice::Speedy,
            concurrency: Concurrency::Merge,
            max_inactive: 1800,
            backup_sync: false,
            secure_cookie: false,
        }
    }
}

impl Options {
    /// Parses the arguments after the program name; `Ok(None)` for `--help`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
        let mut options = Options::default();
        let mut args = args.into_iter();
        let mut wait_given = false;
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                return Ok(None);
            }
            if flag == "--secure-cookie" {
                options.secure_cookie = true;
                continue;
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = || format!("invalid value {value:?} for {flag}");
            match flag.as_str() {
                "--listen" => options.listen = value,
                "--mode" => {
                    options.mode = match value.as_str() {
                        "sticky" => Mode::Sticky,
                        "non-sticky" => Mode::NonSticky,
                        _ => return Err(bad()),
                    }
                }
                "--memcached" => {
                    NodeSpec::parse(&value).map_err(|error| format!("--memcached: {error}"))?;
                    options.memcached = Some(value);
                }
                "--redis" => {
                    // Checked here, reported without the password it may hold.
                    RedisSpec::parse(&value).map_err(|error| format!("--redis: {error}"))?;
                    options.redis = Some(value);
                }
                "--tls-ca" => options.tls_ca = Some(value),
                "--wait-replicas" => {
                    let replicas: u32 = value.parse().map_err(|_| bad())?;
                    options.wait_replicas = (replicas > 0).then_some(replicas);
                    wait_given = true;
                }
                "--failover-nodes" => options.failover_nodes = Some(value),
                "--route" => {
                    Route::new(&value).map_err(|error| format!("--route: {error}"))?;
                    options.route = Some(value);
                }
                "--codec" => {
                    options.codec = match value.as_str() {
                        "speedy" => CodecChoice::Speedy,
                        "json" => CodecChoice::Json,
                        "msgpack" => CodecChoice::Msgpack,
                        _ => return Err(bad()),
                    }
                }
                "--concurrency" => {
                    options.concurrency = match value.as_str() {
                        "none" => Concurrency::LastWriterWins,
                        "lock" => Concurrency::Lock,
                        "merge" => Concurrency::Merge,
                        _ => return Err(bad()),
                    }
                }
                "--max-inactive" => options.max_inactive = value.parse().map_err(|_| bad())?,
                "--backup" => {
                    options.backup_sync = match value.as_str() {
                        "async" => false,
                        "sync" => true,
                        _ => return Err(bad()),
                    }
                }
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if options.memcached.is_some() && options.redis.is_some() {
            return Err("--memcached and --redis are mutually exclusive".into());
        }
        if options.failover_nodes.is_some()
            && options.memcached.is_none()
            && options.redis.is_none()
        {
            return Err("--failover-nodes needs --memcached or --redis".into());
        }
        if options.tls_ca.is_some() && options.redis.is_none() {
            return Err("--tls-ca needs --redis".into());
        }
        if wait_given && options.redis.is_none() {
            return Err(
                "--wait-replicas needs --redis (replicas of a Sentinel group or Cluster)".into(),
            );
        }
        Ok(Some(options))
    }
}
