//! A master, its replicas and the Sentinels that watch them.

use std::time::Duration;

use super::{
    IO_TIMEOUT, RedisOptions, RedisProcess, RedisReply, TlsFiles, TlsMaterial, Topology, poll,
    role, url_credentials, wait_for_replicas_of,
};

/// The service name the Sentinels monitor the master under.
const SERVICE: &str = "tandem";
/// How long starting a group may take to settle: replicas in sync, and every
/// Sentinel knowing every replica and every other Sentinel (they announce themselves
/// every two seconds).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`RedisSentinelGroup::failover`] waits for the new master.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the replicas may take to catch up with the master.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// A replicated Redis deployment watched by Sentinel: one master, `replicas` replicas
/// of it (`replicaof`) and `sentinels` Sentinel processes (`redis-server
/// --sentinel`) monitoring it under the service name `tandem`, each a
/// [`RedisProcess`] of its own.
///
/// The Sentinels act fast, for tests: a master that does not answer for a second is
/// down (`down-after-milliseconds 1000`), a failover is bounded by three seconds
/// (`failover-timeout 3000`), and the quorum is a majority of the Sentinels. A fault
/// is injected through the member's process ([`RedisProcess::kill`],
/// [`RedisProcess::pause`]); the group finds the current master by asking the
/// Sentinels. A member that is restarted comes back with its first configuration (a
/// server as master or replica of the first master, empty unless it was started with
/// [`persistence`](RedisOptions::persistence)); the Sentinels then reconfigure it as
/// a replica of the current master. A restarted Sentinel keeps what it had learnt.
///
/// ```no_run
/// use std::time::Duration;
/// use tandem_testkit::RedisSentinelGroup;
///
/// let group = RedisSentinelGroup::start(2, 3);
/// // "redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/tandem"
/// let url = group.url();
/// group.master().command(&["SET", "k", "v"]);
/// group.wait_for_replication();
/// let old = group.master();
/// old.kill();
/// let new = group.wait_for_master_change(old, Duration::from_secs(15));
/// assert_ne!(new.port(), old.port());
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisSentinelGroup {
    /// The first master first, then the replicas in start order.
    servers: Vec<RedisProcess>,
    sentinels: Vec<RedisProcess>,
}

impl RedisSentinelGroup {
    /// Starts a plain-text master, `replicas` replicas and `sentinels` Sentinels, and
    /// waits until the replicas are in sync and every Sentinel knows them all.
    ///
    /// # Panics
    ///
    /// As [`start_with`](Self::start_with).
    pub fn start(replicas: usize, sentinels: usize) -> RedisSentinelGroup {
        RedisSentinelGroup::start_with(replicas, sentinels, RedisOptions::default())
    }

    /// [`start`](Self::start) with every server and Sentinel configured by
    /// `options` (for example [`valkey`](RedisOptions::valkey) or
    /// [`persistence`](RedisOptions::persistence)).
    ///
    /// # Panics
    ///
    /// A [`password`](RedisOptions::password) or an ACL
    /// [`user`](RedisOptions::user) protects the data servers (replicas log in to
    /// their master with it, `masterauth`); the Sentinels have none, and log in to
    /// the data servers with it (`sentinel auth-pass`). With
    /// [`tls`](RedisOptions::tls) every process, Sentinels included, speaks TLS only,
    /// to clients and to each other (`tls-replication yes`), with one set of
    /// [`TlsFiles`] for the whole group ([`tls_files`](Self::tls_files)).
    ///
    /// # Panics
    ///
    /// If `sentinels` is zero, a process cannot be started (see
    /// [`RedisProcess::start_with`]), or the group does not settle within a few
    /// seconds.
    pub fn start_with(
        replicas: usize,
        sentinels: usize,
        options: RedisOptions,
    ) -> RedisSentinelGroup {
        assert!(
            sentinels > 0,
            "a Sentinel group needs at least one Sentinel"
        );
        let tls = options.is_tls().then(TlsMaterial::generate);
        let master = RedisProcess::start_as(options.clone(), tls.clone(), Topology::Standalone);
        let master_port = master.port();
        let mut servers = vec![master];
        servers.extend((0..replicas).map(|_| {
            let topology = Topology::Replica { master_port };
            RedisProcess::start_as(options.clone(), tls.clone(), topology)
        }));
        let quorum = sentinels / 2 + 1;
        let auth = match (&options.user, &options.password) {
            (Some((name, password)), _) => Some((Some(name.clone()), password.clone())),
            (None, Some(password)) => Some((None, password.clone())),
            (None, None) => None,
        };
        let sentinels = (0..sentinels)
            .map(|_| {
                let topology = Topology::Sentinel {
                    service: SERVICE.to_owned(),
                    master_port,
                    quorum,
                    auth: auth.clone(),
                };
                RedisProcess::start_as(options.without_auth(), tls.clone(), topology)
            })
            .collect();
        let group = RedisSentinelGroup { servers, sentinels };
        group.wait_for_replicas_following(master_port, SETTLE_TIMEOUT);
        group.wait_for_replicas_online(SETTLE_TIMEOUT);
        group.wait_for_replication();
        group.wait_for_sentinels_to_know_each_other();
        group
    }

    /// The name the Sentinels monitor the master under: `tandem`.
    pub fn service(&self) -> &str {
        SERVICE
    }

    /// The Sentinel processes, in start order.
    pub fn sentinels(&self) -> &[RedisProcess] {
        &self.sentinels
    }

    /// The Sentinels' addresses, `127.0.0.1:PORT`, in start order.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisProcess::address).collect()
    }

    /// The URL a Sentinel-aware client connects with:
    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,.../tandem`, with the
    /// credentials of the data servers (`redis+sentinel://:password@...`,
    /// percent-encoded), and `rediss+sentinel://` for TLS.
    pub fn url(&self) -> String {
        let options = self.servers[0].options();
        let scheme = if options.is_tls() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!(
            "{scheme}://{}{}/{SERVICE}",
            url_credentials(options),
            self.sentinel_addrs().join(",")
        )
    }

    /// The TLS files every process of the group shares (the test CA a client
    /// trusts); `None` for a plain-text group.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.servers[0].tls_files()
    }

    /// Every data server, whatever its role now: the first master first, then the
    /// replicas in start order.
    pub fn servers(&self) -> &[RedisProcess] {
        &self.servers
    }

    /// The current master, as the first Sentinel that answers reports it
    /// (`SENTINEL GET-MASTER-ADDR-BY-NAME`). Right after a fault the Sentinels may
    /// still report the old master (it may even be killed); after
    /// [`wait_for_master_change`](Self::wait_for_master_change) they all agree on
    /// the new one.
    ///
    /// # Panics
    ///
    /// If no Sentinel answers, or the one that does reports a server that is not a
    /// member of the group.
    pub fn master(&self) -> &RedisProcess {
        let port = self
            .sentinels
            .iter()
            .find_map(|sentinel| self.reported_master(sentinel))
            .unwrap_or_else(|| {
                panic!(
                    "no Sentinel of {:?} answers with the master of {SERVICE:?}",
                    self.sentinel_addrs()
                )
            });
        self.server_on(port)
    }

    /// Every data server but the current [`master`](Self::master), in start order
    /// (a killed one included).
    pub fn replicas(&self) -> Vec<&RedisProcess> {
        let master = self.master().port();
        self.servers
            .iter()
            .filter(|server| server.port() != master)
            .collect()
    }

    /// Waits until every replica of the master (as the master lists them) has
    /// processed all the master's writes so far, so that a write made before this
    /// call can be read on them.
    ///
    /// # Panics
    ///
    /// If the master does not answer, or a replica does not catch up within a few
    /// seconds.
    pub fn wait_for_replication(&self) {
        wait_for_replicas_of(self.master(), &self.servers, REPLICATION_TIMEOUT);
    }

    /// Asks a Sentinel for a graceful failover (`SENTINEL FAILOVER tandem`: the
    /// master is not down, a replica is promoted and the old master made its
    /// replica) and waits until every Sentinel reports the new master and every
    /// running server follows it. Returns the new master.
    ///
    /// The Sentinels would make the old master a replica of the new one at their
    /// next look at it, up to ten seconds later; the kit sends it the same
    /// `REPLICAOF` at once, so that a test does not wait for that.
    ///
    /// # Panics
    ///
    /// If no Sentinel accepts the request within a few seconds (the message shows
    /// their refusals), or the failover does not complete within a few seconds.
    pub fn failover(&self) -> &RedisProcess {
        let old = self.master();
        // A Sentinel refuses while a failover is under way or no replica is fit
        // to be promoted (one that has just come back, for example): ask again.
        let mut refusals = Vec::new();
        let accepted = poll(FAILOVER_TIMEOUT, || {
            refusals.clear();
            self.sentinels.iter().find_map(|sentinel| {
                if !sentinel.is_running() {
                    return None;
                }
                match sentinel.request(&["SENTINEL", "FAILOVER", SERVICE], IO_TIMEOUT) {
                    Ok(RedisReply::Status(ok)) if ok == "OK" => Some(()),
                    reply => {
                        refusals.push(format!("{}: {reply:?}", sentinel.address()));
                        None
                    }
                }
            })
        });
        assert!(
            accepted.is_some(),
            "no Sentinel accepted SENTINEL FAILOVER {SERVICE} within {FAILOVER_TIMEOUT:?}:\n  {}",
            refusals.join("\n  ")
        );
        let new = self.wait_for_master_change(old, FAILOVER_TIMEOUT);
        // A Sentinel turns the old master into a replica only when it next asks it
        // for its INFO, which it does every ten seconds: the kit does that at once.
        let master_port = new.port().to_string();
        for server in &self.servers {
            if server.port() != new.port() && role(server).is_some_and(|(role, _)| role == "master")
            {
                let args = ["REPLICAOF", "127.0.0.1", master_port.as_str()];
                match server.request(&args, IO_TIMEOUT) {
                    Ok(RedisReply::Status(ok)) if ok == "OK" => {}
                    reply => panic!(
                        "REPLICAOF 127.0.0.1 {master_port} on the old master {}: {reply:?}",
                        server.address()
                    ),
                }
            }
        }
        self.wait_for_replicas_following(new.port(), FAILOVER_TIMEOUT);
        new
    }

    /// Waits until every Sentinel that answers reports a master other than `old`,
    /// and that server says it is a master (`ROLE`); returns it. This is how a
    /// test sees a failover the Sentinels made on their own, after `old` was killed
    /// or paused.
    ///
    /// # Panics
    ///
    /// If that does not happen within `timeout`.
    pub fn wait_for_master_change(&self, old: &RedisProcess, timeout: Duration) -> &RedisProcess {
        let changed = poll(timeout, || {
            let reported: Vec<u16> = self
                .sentinels
                .iter()
                .filter_map(|sentinel| self.reported_master(sentinel))
                .collect();
            let &port = reported.first()?;
            let agreed = port != old.port() && reported.iter().all(|&other| other == port);
            let new = self.server_on(port);
            (agreed && role(new).is_some_and(|(role, _)| role == "master")).then_some(new)
        });
        changed.unwrap_or_else(|| {
            panic!(
                "the Sentinels did not agree on a new master (other than {}) within {timeout:?}",
                old.address()
            )
        })
    }

    /// The port of the master `sentinel` reports, if it answers.
    fn reported_master(&self, sentinel: &RedisProcess) -> Option<u16> {
        if !sentinel.is_running() {
            return None;
        }
        let args = ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE];
        let RedisReply::Array(addr) = sentinel.request(&args, IO_TIMEOUT).ok()? else {
            return None;
        };
        addr.get(1)?.as_str()?.parse().ok()
    }

    fn server_on(&self, port: u16) -> &RedisProcess {
        self.servers
            .iter()
            .find(|server| server.port() == port)
            .unwrap_or_else(|| {
                panic!("the Sentinels report the master on port {port}, which is not in the group")
            })
    }

    /// Waits until every running server but the one on `master_port` is its
    /// replica with the link up.
    fn wait_for_replicas_following(&self, master_port: u16, timeout: Duration) {
        let following = poll(timeout, || {
            self.servers
                .iter()
                .filter(|server| server.port() != master_port && server.is_running())
                .all(|server| {
                    role(server).is_some_and(|(_, of)| {
                        of.is_some_and(|(port, link)| port == master_port && link == "connected")
                    })
                })
                .then_some(())
        });
        following.unwrap_or_else(|| {
            panic!("not every running server followed the master on port {master_port} within {timeout:?}")
        });
    }

    /// Waits until every replica acknowledges the master's replication stream
    /// (`WAIT` for all of them after a `PUBLISH`, which is replicated, on one
    /// connection): a replica says it is connected once it loaded the master's
    /// data, but may acknowledge nothing for a second more, and a test that waits
    /// for its replicas (`WAIT`) would find it missing.
    fn wait_for_replicas_online(&self, timeout: Duration) {
        let master = &self.servers[0];
        let wanted = self.servers.len() - 1;
        let count = wanted.to_string();
        let online = poll(timeout, || {
            let mut admin = master.admin_connection(IO_TIMEOUT).ok()?;
            admin
                .request(&["PUBLISH", "__tandem_testkit__", "ready"])
                .ok()?;
            match admin.request(&["WAIT", count.as_str(), "100"]).ok()? {
                RedisReply::Integer(acknowledged) if acknowledged >= wanted as i64 => Some(()),
                _ => None,
            }
        });
        online.unwrap_or_else(|| {
            panic!(
                "the {wanted} replicas of the master {} did not acknowledge its stream within {timeout:?}",
                master.address()
            )
        });
    }

    /// Waits until every Sentinel knows every replica and every other Sentinel
    /// (`SENTINEL MASTER tandem`), which a failover needs.
    fn wait_for_sentinels_to_know_each_other(&self) {
        let replicas = (self.servers.len() - 1).to_string();
        let others = (self.sentinels.len() - 1).to_string();
        let settled = poll(SETTLE_TIMEOUT, || {
            self.sentinels
                .iter()
                .all(|sentinel| {
                    let Ok(RedisReply::Array(fields)) =
                        sentinel.request(&["SENTINEL", "MASTER", SERVICE], IO_TIMEOUT)
                    else {
                        return false;
                    };
                    let field = |name: &str| {
                        fields
                            .chunks(2)
                            .find(|pair| pair[0].as_str() == Some(name))
                            .and_then(|pair| pair.get(1)?.as_str().map(str::to_owned))
                    };
                    field("num-slaves").as_ref() == Some(&replicas)
                        && field("num-other-sentinels").as_ref() == Some(&others)
                })
                .then_some(())
        });
        settled.unwrap_or_else(|| {
            panic!(
                "the Sentinels {:?} did not all learn of {replicas} replicas and {others} other Sentinels within {SETTLE_TIMEOUT:?}",
                self.sentinel_addrs()
            )
        });
    }
}
