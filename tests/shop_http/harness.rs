//! Two shop servers on real TCP ports sharing one real memcached cluster, each with a
//! store (connection pools, node health) of its own, as two processes would have: two
//! of one example, or one of each (`shop` on axum, `shop-actix`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem::NodeSpec;
use tandem::memcached::{MemcachedConfig, MemcachedStore};
use tandem_testkit::MemcachedCluster;
use tokio::task::JoinHandle;

use crate::client::{Client, Reply};
use crate::shops::{Framework, Remote, Served};

/// memcached nodes: two, so that a non-sticky session has a backup copy on the node
/// that does not hold its primary.
const NODES: usize = 2;

/// How long a user keeps retrying a request refused as retryable (409, 503): longer
/// than the library's 5 s lock timeout, so that one timed-out wait is retried.
const RETRY_FOR: Duration = Duration::from_secs(6);

/// Two servers of the axum shop.
pub const AXUM_PAIR: [Framework; 2] = [Framework::Axum, Framework::Axum];
/// The axum shop first (the victim's or owner's server), then the actix-web one.
pub const MIXED_PAIR: [Framework; 2] = [Framework::Axum, Framework::Actix];
/// The actix-web shop first, then the axum one.
pub const MIXED_PAIR_REVERSED: [Framework; 2] = [Framework::Actix, Framework::Axum];

/// The shops' `--mode` and `--concurrency`, spelled as on their command line, and
/// which shop each of the two servers is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub mode: &'static str,
    pub concurrency: &'static str,
    pub servers: [Framework; 2],
}

impl Setting {
    pub fn sticky(&self) -> bool {
        self.mode == "sticky"
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--mode {} --concurrency {}, servers {} and {}",
            self.mode, self.concurrency, self.servers[0], self.servers[1]
        )
    }
}

/// One shop served over TCP, by either example. Dropping it stops serving.
pub struct Server {
    pub address: SocketAddr,
    /// Its route in sticky mode (`a1`, `a2`), else `s1`, `s2`, and its framework: for
    /// messages.
    pub name: String,
    _served: Served,
}

/// The cluster and two servers: `servers[0]` is where the victim or owner goes.
pub struct Pair {
    pub servers: [Server; 2],
    // Last: the servers stop before memcached does.
    _cluster: MemcachedCluster,
}

impl Pair {
    pub async fn start(setting: Setting) -> Pair {
        let cluster = MemcachedCluster::start(NODES);
        let first = serve(&cluster, setting, 1, setting.servers[0]).await;
        let second = serve(&cluster, setting, 2, setting.servers[1]).await;
        Pair {
            servers: [first, second],
            _cluster: cluster,
        }
    }
}

async fn serve(
    cluster: &MemcachedCluster,
    setting: Setting,
    number: usize,
    framework: Framework,
) -> Server {
    let spec = cluster.node_spec();
    let store = MemcachedStore::connect(
        &NodeSpec::parse(&spec).expect("the cluster's node spec"),
        // What the shop binary uses.
        MemcachedConfig::default(),
    )
    .await
    .expect("memcached connects");
    let route = format!("a{number}");
    let mut args = vec![
        "--mode",
        setting.mode,
        "--concurrency",
        setting.concurrency,
        "--memcached",
        spec.as_str(),
    ];
    if setting.sticky() {
        args.extend(["--route", route.as_str()]);
    }
    let served = Served::over(framework, &args, Remote::Memcached(Arc::new(store))).await;
    let name = if setting.sticky() {
        route
    } else {
        format!("s{number}")
    };
    Server {
        address: served.address,
        name: format!("{name} ({framework})"),
        _served: served,
    }
}

/// The random part of a session id (`<random>-<node>[.<route>]`): what identifies a
/// session whatever node or route its id names (a takeover changes the route, a
/// relocation the node).
pub fn random_part(id: &str) -> &str {
    id.split_once('-').map_or(id, |(random, _)| random)
}

/// The `session` field of a shop JSON answer, if it names one.
pub fn session_field(json: &Value) -> Option<&str> {
    json.get("session").and_then(Value::as_str)
}

/// The `user` field of a shop JSON answer, if set.
pub fn user_field(json: &Value) -> Option<&str> {
    json.get("user").and_then(Value::as_str)
}

/// Statuses an attacker's (or a stolen cookie's) request may get: served, a conflict
/// to retry, or the session unavailable for now. Anything else (a 500, a 4xx for a
/// well-formed request) is a bug.
pub fn acceptable(status: u16) -> bool {
    matches!(status, 200 | 409 | 503)
}

/// One request a traffic loop sent, and what came back.
pub struct Observation {
    pub server: String,
    pub request: String,
    pub sent: Instant,
    pub result: Result<Reply, String>,
}

impl Observation {
    /// One line for failure messages, with when it was sent relative to `moment`
    /// (the login, the logout).
    pub fn describe(&self, moment: Instant) -> String {
        let at = if self.sent >= moment {
            format!("+{}", (self.sent - moment).as_millis())
        } else {
            format!("-{}", (moment - self.sent).as_millis())
        };
        let outcome = match &self.result {
            Ok(reply) => reply.describe(),
            Err(error) => error.clone(),
        };
        format!("[{} {} {at}ms] {outcome}", self.server, self.request)
    }
}

/// Loops sending requests with one fixed cookie, each on a keep-alive connection of
/// its own, back to back (no pause: the point is to have requests in flight at every
/// moment), until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    loops: Vec<JoinHandle<Vec<Observation>>>,
}

impl Traffic {
    /// One loop per `(server, method, path)`, all sending `Cookie` `cookie`.
    pub fn start(loops: &[(&Server, &'static str, &'static str)], cookie: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let loops = loops
            .iter()
            .map(|&(server, method, path)| {
                let stop = Arc::clone(&stop);
                let cookie = cookie.to_owned();
                let name = server.name.clone();
                let mut client = Client::new(server.address);
                let request = format!("{method} {path}");
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let result = client.send(method, path, Some(&cookie)).await;
                        seen.push(Observation {
                            server: name.clone(),
                            request: request.clone(),
                            sent,
                            result,
                        });
                    }
                    seen
                })
            })
            .collect();
        Traffic { stop, loops }
    }

    /// Stops the loops and returns everything they saw. Requests in flight finish
    /// first: their answers count as much as any.
    pub async fn stop(self) -> Vec<Observation> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.loops {
            all.extend(task.await.expect("a traffic loop panicked"));
        }
        all
    }
}

/// Sends `method path` until it is served (200), retrying while it is refused as
/// retryable (409, 503), as a browser's user would; gives up after `RETRY_FOR`.
/// `Err` with every answer it got if it never succeeded.
pub async fn until_served(
    server: &Server,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> Result<Reply, String> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut client = Client::new(server.address);
    let mut refused = Vec::new();
    loop {
        match client.send(method, path, cookie).await {
            Ok(reply) if reply.status == 200 => return Ok(reply),
            Ok(reply) if matches!(reply.status, 409 | 503) && Instant::now() < deadline => {
                refused.push(reply.describe());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(reply) => {
                refused.push(reply.describe());
                return Err(format!("{method} {path} on {}: {refused:?}", server.name));
            }
            Err(error) => {
                return Err(format!(
                    "{method} {path} on {}: {error} (after {refused:?})",
                    server.name
                ));
            }
        }
    }
}
