//! A Redis Cluster: cluster-enabled servers that share the 16384 hash slots.

use std::ops::RangeInclusive;
use std::process::Command;
use std::time::Duration;

use super::{
    IO_TIMEOUT, RedisOptions, RedisProcess, RedisReply, TlsFiles, TlsMaterial, Topology, poll,
    role, url_credentials, wait_for_replicas_of,
};

/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;
/// How long a new cluster may take to agree on its slots and sync its replicas.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the replicas may take to catch up with their master.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);
/// The client that creates the cluster, installed with `redis-server`.
const CLI: &str = "redis-cli";

/// The hash slot of `key` in a Redis Cluster: the CRC16 (XMODEM) of the key modulo
/// 16384, where only the hash tag counts if the key has one (the text between the
/// first `{` and the first `}` after it, when it is not empty), so that keys with
/// the same tag share a slot.
///
/// ```
/// use tandem_testkit::key_slot;
///
/// assert_eq!(key_slot(b"123456789"), 0x31C3 % 16384);
/// assert_eq!(key_slot(b"{user1}.name"), key_slot(b"user1"));
/// assert_eq!(key_slot(b"{}x"), key_slot(b"{}x")); // an empty tag does not count
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&byte| byte == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&byte| byte == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % SLOTS
}

/// CRC-16/XMODEM: polynomial 0x1021, initial value 0, no reflection.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A node as `CLUSTER NODES` describes it.
#[derive(Debug)]
struct NodeLine {
    port: u16,
    master: bool,
    failed: bool,
    /// Still being introduced (`handshake`) or without a known address (`noaddr`).
    joining: bool,
    slots: Vec<RangeInclusive<u16>>,
}

/// How many keys one `MIGRATE` moves, as `redis-cli --cluster reshard` does by
/// default (`--cluster-pipeline 10`).
const MIGRATE_BATCH: usize = 10;
/// `MIGRATE`'s own bound on its transfer, in milliseconds.
const MIGRATE_TIMEOUT_MS: &str = "5000";

/// A Redis Cluster of cluster-enabled [`RedisProcess`]es (`cluster-enabled yes`,
/// each with its cluster bus on a second free port), made with `redis-cli --cluster
/// create`: `masters` masters sharing the 16384 hash slots and
/// `replicas_per_master` replicas of each.
///
/// A node that does not answer for a second is failing (`cluster-node-timeout
/// 1000`), and a replica takes over from a failed master however far behind it is
/// (`cluster-replica-validity-factor 0`). A fault is injected through the node's
/// process ([`RedisProcess::kill`], [`RedisProcess::pause`]); a restarted node keeps
/// its cluster configuration (`nodes.conf` in its directory) and rejoins.
///
/// ```no_run
/// use std::time::Duration;
/// use tandem_testkit::RedisCluster;
///
/// let cluster = RedisCluster::start(3, 1);
/// let url = cluster.url(); // "redis+cluster://127.0.0.1:P1,127.0.0.1:P2,..."
/// let master = cluster.master_of_key("user:{42}");
/// master.kill();
/// let heir = cluster.wait_for_failover(master, Duration::from_secs(15));
/// assert_ne!(heir.port(), master.port());
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisProcess>,
    options: RedisOptions,
}

impl RedisCluster {
    /// Starts and creates a plain-text cluster, and waits until every node says
    /// `cluster_state:ok` and every replica is in sync with its master.
    ///
    /// # Panics
    ///
    /// As [`start_with`](Self::start_with).
    pub fn start(masters: usize, replicas_per_master: usize) -> RedisCluster {
        RedisCluster::start_with(masters, replicas_per_master, RedisOptions::default())
    }

    /// [`start`](Self::start) with every node configured by `options` (for example
    /// [`valkey`](RedisOptions::valkey)).
    ///
    /// # Panics
    ///
    /// A [`password`](RedisOptions::password) or an ACL
    /// [`user`](RedisOptions::user) protects every node (replicas log in to their
    /// master with it, `masterauth`). With [`tls`](RedisOptions::tls) every node
    /// speaks TLS only, to clients and on the cluster bus (`tls-cluster yes`,
    /// `tls-replication yes`), with one set of [`TlsFiles`] for the whole cluster
    /// ([`tls_files`](Self::tls_files)).
    ///
    /// # Panics
    ///
    /// If `masters` is less than three (the least `redis-cli` makes a cluster of), a
    /// node cannot be started, `redis-cli --cluster create` fails, or the cluster
    /// does not settle within a few seconds.
    pub fn start_with(
        masters: usize,
        replicas_per_master: usize,
        options: RedisOptions,
    ) -> RedisCluster {
        assert!(masters >= 3, "a Redis Cluster needs at least three masters");
        let tls = options.is_tls().then(TlsMaterial::generate);
        let count = masters * (1 + replicas_per_master);
        let nodes: Vec<RedisProcess> = (0..count)
            .map(|_| {
                let topology = Topology::ClusterNode { bus_port: 0 };
                RedisProcess::start_as(options.clone(), tls.clone(), topology)
            })
            .collect();
        let mut args = cli_connection_args(&options, nodes[0].tls_files());
        // The message of a failure shows no password.
        let shown = args.len();
        args.extend(["--cluster".to_owned(), "create".to_owned()]);
        args.extend(nodes.iter().map(RedisProcess::address));
        args.extend([
            "--cluster-replicas".to_owned(),
            replicas_per_master.to_string(),
            "--cluster-yes".to_owned(),
        ]);
        let output = Command::new(CLI)
            .args(&args)
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run {CLI} ({error}); it comes with redis-server (Debian: redis-tools)"
                )
            });
        assert!(
            output.status.success(),
            "{CLI} ... {} failed ({}):\n{}{}",
            args[shown..].join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes, options };
        cluster.wait_for_state_ok(SETTLE_TIMEOUT);
        let synced = poll(SETTLE_TIMEOUT, || {
            cluster
                .nodes
                .iter()
                .filter_map(role)
                .filter_map(|(_, of)| of)
                .filter(|(_, link)| link == "connected")
                .count()
                .eq(&(masters * replicas_per_master))
                .then_some(())
        });
        synced.unwrap_or_else(|| {
            panic!("the replicas of the cluster did not sync within {SETTLE_TIMEOUT:?}")
        });
        cluster
    }

    /// The URL a cluster-aware client connects with:
    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`, every node in start order,
    /// with the credentials of the nodes (`redis+cluster://:password@...`,
    /// percent-encoded), and `rediss+cluster://` for TLS.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(RedisProcess::address).collect();
        let scheme = if self.options.is_tls() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        let credentials = url_credentials(&self.options);
        format!("{scheme}://{credentials}{}", addrs.join(","))
    }

    /// The TLS files every node shares (the test CA a client trusts); `None` for a
    /// plain-text cluster.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.nodes[0].tls_files()
    }

    /// Every node, whatever its role now, in start order.
    pub fn nodes(&self) -> &[RedisProcess] {
        &self.nodes
    }

    /// The current masters that own slots, in start order, as the first node that
    /// answers sees them (`CLUSTER NODES`): a master the cluster marked failed is
    /// not one, even before a replica took its slots.
    ///
    /// # Panics
    ///
    /// If no node answers.
    pub fn masters(&self) -> Vec<&RedisProcess> {
        let view = self.view();
        self.nodes
            .iter()
            .filter(|node| {
                view.iter().any(|line| {
                    line.port == node.port()
                        && line.master
                        && !line.failed
                        && !line.slots.is_empty()
                })
            })
            .collect()
    }

    /// The slot ranges `node` owns, as the first node that answers sees them
    /// (`CLUSTER NODES`); empty for a replica.
    ///
    /// # Panics
    ///
    /// If no node answers.
    pub fn slots_of(&self, node: &RedisProcess) -> Vec<RangeInclusive<u16>> {
        self.view()
            .into_iter()
            .find(|line| line.port == node.port())
            .map(|line| line.slots)
            .unwrap_or_default()
    }

    /// The node that owns `slot`, as the first node that answers sees it.
    ///
    /// # Panics
    ///
    /// If `slot` is not below 16384, no node answers, or no node owns the slot.
    pub fn node_for_slot(&self, slot: u16) -> &RedisProcess {
        assert!(slot < SLOTS, "slot {slot} is not below {SLOTS}");
        let view = self.view();
        let port = view
            .iter()
            .find(|line| line.slots.iter().any(|range| range.contains(&slot)))
            .map(|line| line.port)
            .unwrap_or_else(|| panic!("no node of the cluster owns slot {slot}: {view:?}"));
        self.node_on(port)
    }

    /// The master that owns the slot of `key` ([`key_slot`]).
    ///
    /// # Panics
    ///
    /// As [`node_for_slot`](Self::node_for_slot).
    pub fn master_of_key(&self, key: &str) -> &RedisProcess {
        self.node_for_slot(key_slot(key.as_bytes()))
    }

    /// Waits until, for every running master, its replicas (as it lists them) have
    /// processed all its writes so far, so that a write made before this call
    /// survives the master's death.
    ///
    /// # Panics
    ///
    /// If a master does not answer, or a replica does not catch up within a few
    /// seconds.
    pub fn wait_for_replication(&self) {
        for master in self
            .nodes
            .iter()
            .filter(|node| role(node).is_some_and(|(role, _)| role == "master"))
        {
            wait_for_replicas_of(master, &self.nodes, REPLICATION_TIMEOUT);
        }
    }

    /// Waits until every running node says `cluster_state:ok` (`CLUSTER INFO`). A
    /// paused node does not answer, so it keeps this waiting.
    ///
    /// # Panics
    ///
    /// If that does not happen within `timeout`.
    pub fn wait_for_state_ok(&self, timeout: Duration) {
        self.wait_for_state_ok_but(None, timeout);
    }

    /// [`wait_for_state_ok`](Self::wait_for_state_ok) of every running node but
    /// the one on port `skip` (a paused node).
    fn wait_for_state_ok_but(&self, skip: Option<u16>, timeout: Duration) {
        let ok = poll(timeout, || {
            self.nodes
                .iter()
                .filter(|node| node.is_running() && Some(node.port()) != skip)
                .all(|node| {
                    node.request(&["CLUSTER", "INFO"], IO_TIMEOUT)
                        .ok()
                        .and_then(|info| {
                            info.as_str()
                                .map(|info| info.contains("cluster_state:ok\r\n"))
                        })
                        .unwrap_or(false)
                })
                .then_some(())
        });
        ok.unwrap_or_else(|| {
            panic!("the cluster did not reach cluster_state:ok on every running node within {timeout:?}")
        });
    }

    /// Waits until another node owns the slots `old` owned (a replica of it took
    /// over, after `old` was killed or paused), that node says it is a master, and
    /// every running node but `old` (which may be paused) says `cluster_state:ok`;
    /// returns the new owner.
    ///
    /// # Panics
    ///
    /// If `old` owns no slots (as the cluster sees it at the call), or that does not
    /// happen within `timeout`.
    pub fn wait_for_failover(&self, old: &RedisProcess, timeout: Duration) -> &RedisProcess {
        let slots = self.slots_of(old);
        let Some(first) = slots.first().map(|range| *range.start()) else {
            panic!("{} owns no slots of the cluster", old.address());
        };
        let heir = poll(timeout, || {
            let view = self.view_from_others(old)?;
            let owner = view
                .iter()
                .find(|line| line.slots.iter().any(|range| range.contains(&first)))?;
            let heir = self.node_on(owner.port);
            (heir.port() != old.port() && role(heir).is_some_and(|(role, _)| role == "master"))
                .then_some(heir)
        });
        let heir = heir.unwrap_or_else(|| {
            panic!(
                "no other node took the slots of {} within {timeout:?}",
                old.address()
            )
        });
        self.wait_for_state_ok_but(Some(old.port()), timeout);
        heir
    }

    /// `CLUSTER NODES` of the first running node that answers.
    fn view(&self) -> Vec<NodeLine> {
        self.nodes
            .iter()
            .find_map(node_lines)
            .unwrap_or_else(|| panic!("no node of the cluster answers CLUSTER NODES"))
    }

    /// Starts one more cluster-enabled server (with the options of the others),
    /// introduces it to the cluster (`CLUSTER MEET` through a running node, as
    /// `redis-cli --cluster add-node` does) and waits until every running node knows
    /// it and it knows them all. It is a master without slots: give it some with
    /// [`migrate_slots`](Self::migrate_slots). Returns it; it is also the last of
    /// [`nodes`](Self::nodes) from now on.
    ///
    /// ```no_run
    /// use tandem_testkit::RedisCluster;
    ///
    /// let mut cluster = RedisCluster::start(3, 0);
    /// let port = cluster.add_master().port();
    /// let (from, to) = (cluster.masters()[0], cluster.nodes().last().unwrap());
    /// assert_eq!(to.port(), port);
    /// let moved = cluster.migrate_slots(from, to, 100);
    /// assert_eq!(moved.len(), 100);
    /// ```
    ///
    /// # Panics
    ///
    /// If the server cannot be started, no running node accepts the `CLUSTER
    /// MEET`, or the nodes do not all know each other within a few seconds.
    pub fn add_master(&mut self) -> &RedisProcess {
        let node = RedisProcess::start_as(
            self.options.clone(),
            None,
            Topology::ClusterNode { bus_port: 0 },
        );
        let Topology::ClusterNode { bus_port } = node.topology else {
            unreachable!("started as a cluster node");
        };
        let (port, bus_port) = (node.port().to_string(), bus_port.to_string());
        let seed = self
            .nodes
            .iter()
            .find(|member| member.is_running())
            .unwrap_or_else(|| panic!("no node of the cluster runs to introduce a new one to"));
        expect_ok(
            seed,
            &[
                "CLUSTER",
                "MEET",
                "127.0.0.1",
                port.as_str(),
                bus_port.as_str(),
            ],
        );
        self.nodes.push(node);
        let everyone = self
            .nodes
            .iter()
            .filter(|member| member.is_running())
            .count();
        let new_port = self.nodes[self.nodes.len() - 1].port();
        let known = poll(SETTLE_TIMEOUT, || {
            self.nodes
                .iter()
                .filter(|member| member.is_running())
                .all(|member| {
                    node_lines(member).is_some_and(|view| {
                        view.iter().filter(|line| !line.joining).count() >= everyone
                            && view
                                .iter()
                                .any(|line| line.port == new_port && !line.joining && !line.failed)
                    })
                })
                .then_some(())
        });
        known.unwrap_or_else(|| {
            panic!("the cluster did not learn of its new node on port {new_port} within {SETTLE_TIMEOUT:?}")
        });
        self.wait_for_state_ok(SETTLE_TIMEOUT);
        &self.nodes[self.nodes.len() - 1]
    }

    /// Moves the `count` lowest slots `from` owns, with their keys, to `to` (see
    /// [`migrate_slot`](Self::migrate_slot)), one slot after the other, and waits
    /// until every running node says `to` owns them. Returns the slots moved.
    ///
    /// It blocks the calling thread for the whole resharding (seconds for thousands
    /// of slots), so a test that reshards under traffic runs it on a thread of its
    /// own (`tokio::task::spawn_blocking` with the cluster in an `Arc`); the clients
    /// meanwhile get `ASK` and `MOVED` redirections from the servers, for real.
    ///
    /// # Panics
    ///
    /// If `from` owns fewer than `count` slots, or as
    /// [`migrate_slot`](Self::migrate_slot).
    pub fn migrate_slots(&self, from: &RedisProcess, to: &RedisProcess, count: usize) -> Vec<u16> {
        self.migrate_slots_slowly(from, to, count, Duration::ZERO)
    }

    /// [`migrate_slots`](Self::migrate_slots), pausing `pause` after each batch of
    /// keys moved: each slot stays half moved for a while, so that clients meanwhile
    /// surely get `ASK` for its keys that moved already.
    ///
    /// # Panics
    ///
    /// As [`migrate_slots`](Self::migrate_slots).
    pub fn migrate_slots_slowly(
        &self,
        from: &RedisProcess,
        to: &RedisProcess,
        count: usize,
        pause: Duration,
    ) -> Vec<u16> {
        let slots: Vec<u16> = self
            .slots_of(from)
            .into_iter()
            .flatten()
            .take(count)
            .collect();
        assert!(
            slots.len() == count,
            "{} owns {} slots, fewer than the {count} to move",
            from.address(),
            slots.len()
        );
        for &slot in &slots {
            self.migrate_slot_pausing(from, to, slot, pause);
        }
        self.wait_for_owner(&slots, to);
        slots
    }

    /// Moves `slot` and its keys from the master `from` to the master `to` the way
    /// `redis-cli --cluster reshard` does: `CLUSTER SETSLOT slot IMPORTING` on `to`
    /// and `MIGRATING` on `from`; then `MIGRATE` of the slot's keys ten at a time
    /// (meanwhile `from` answers requests for keys it no longer has with `ASK`, and
    /// `to` serves them after `ASKING`); then `CLUSTER SETSLOT slot NODE to` on `to`,
    /// on `from` and on every other master (clients of the old owner get `MOVED`
    /// from then on). Does not wait for the replicas or the other nodes to hear of
    /// it (gossip does that within a second or so); [`migrate_slots`](Self::migrate_slots)
    /// does.
    ///
    /// # Panics
    ///
    /// If a node refuses a step (for example `from` does not own `slot`), or does not
    /// answer within a second (`MIGRATE`: five seconds).
    pub fn migrate_slot(&self, from: &RedisProcess, to: &RedisProcess, slot: u16) {
        self.migrate_slot_pausing(from, to, slot, Duration::ZERO);
    }

    /// [`migrate_slot`](Self::migrate_slot), pausing `pause` after each batch.
    fn migrate_slot_pausing(
        &self,
        from: &RedisProcess,
        to: &RedisProcess,
        slot: u16,
        pause: Duration,
    ) {
        let (from_id, to_id) = (node_id(from), node_id(to));
        let slot = slot.to_string();
        let setslot = |node: &RedisProcess, state: &str, id: &str| {
            expect_ok(node, &["CLUSTER", "SETSLOT", slot.as_str(), state, id]);
        };
        setslot(to, "IMPORTING", &from_id);
        setslot(from, "MIGRATING", &to_id);
        let port = to.port().to_string();
        let batch = MIGRATE_BATCH.to_string();
        loop {
            let reply = from.command(&["CLUSTER", "GETKEYSINSLOT", slot.as_str(), batch.as_str()]);
            let RedisReply::Array(keys) = &reply else {
                panic!(
                    "CLUSTER GETKEYSINSLOT {slot} on {}: {reply:?}",
                    from.address()
                );
            };
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", port.as_str(), "", "0"];
            args.push(MIGRATE_TIMEOUT_MS);
            // The target wants the same credentials as every node.
            match (&self.options.user, &self.options.password) {
                (Some((name, password)), _) => args.extend(["AUTH2", name, password]),
                (None, Some(password)) => args.extend(["AUTH", password]),
                (None, None) => {}
            }
            args.push("KEYS");
            args.extend(keys.iter().map(|key| {
                key.as_str()
                    .unwrap_or_else(|| panic!("a key that is not UTF-8: {key:?}"))
            }));
            let reply = from
                .request(&args, Duration::from_secs(6))
                .unwrap_or_else(|error| panic!("MIGRATE on {}: {error}", from.address()));
            assert!(
                matches!(&reply, RedisReply::Status(ok) if ok == "OK" || ok == "NOKEY"),
                "MIGRATE of slot {slot} from {} to {}: {reply:?}",
                from.address(),
                to.address()
            );
            std::thread::sleep(pause);
        }
        setslot(to, "NODE", &to_id);
        setslot(from, "NODE", &to_id);
        for master in self.masters() {
            if master.port() != from.port() && master.port() != to.port() {
                setslot(master, "NODE", &to_id);
            }
        }
    }

    /// Waits until every running node says `owner` owns all of `slots`.
    fn wait_for_owner(&self, slots: &[u16], owner: &RedisProcess) {
        let agreed = poll(SETTLE_TIMEOUT, || {
            self.nodes
                .iter()
                .filter(|node| node.is_running())
                .all(|node| {
                    node_lines(node).is_some_and(|view| {
                        view.iter().any(|line| {
                            line.port == owner.port()
                                && slots
                                    .iter()
                                    .all(|slot| line.slots.iter().any(|range| range.contains(slot)))
                        })
                    })
                })
                .then_some(())
        });
        agreed.unwrap_or_else(|| {
            panic!(
                "not every node of the cluster saw {} own the {} slots moved to it within {SETTLE_TIMEOUT:?}",
                owner.address(),
                slots.len()
            )
        });
    }

    /// `CLUSTER NODES` of the first running node but `old` that answers.
    fn view_from_others(&self, old: &RedisProcess) -> Option<Vec<NodeLine>> {
        self.nodes
            .iter()
            .filter(|node| node.port() != old.port())
            .find_map(node_lines)
    }

    fn node_on(&self, port: u16) -> &RedisProcess {
        self.nodes
            .iter()
            .find(|node| node.port() == port)
            .unwrap_or_else(|| {
                panic!("the cluster names a node on port {port} that it did not start")
            })
    }
}

/// The cluster's id of `node` (`CLUSTER MYID`).
/// The `redis-cli` arguments that connect it to a node started with `options`:
/// `--tls --cacert ... --cert ... --key ...` and `--user`/`--pass` or `-a`, as
/// needed.
fn cli_connection_args(options: &RedisOptions, tls: Option<&TlsFiles>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(tls) = tls {
        args.push("--tls".to_owned());
        for (flag, path) in [
            ("--cacert", &tls.ca_cert),
            ("--cert", &tls.client_cert),
            ("--key", &tls.client_key),
        ] {
            args.extend([flag.to_owned(), path.to_string_lossy().into_owned()]);
        }
    }
    match (&options.user, &options.password) {
        (Some((name, password)), _) => {
            args.extend(["--user".to_owned(), name.clone()]);
            args.extend(["--pass".to_owned(), password.clone()]);
        }
        (None, Some(password)) => args.extend(["-a".to_owned(), password.clone()]),
        (None, None) => return args,
    }
    args.push("--no-auth-warning".to_owned());
    args
}

fn node_id(node: &RedisProcess) -> String {
    let reply = node.command(&["CLUSTER", "MYID"]);
    reply
        .as_str()
        .unwrap_or_else(|| panic!("CLUSTER MYID on {}: {reply:?}", node.address()))
        .to_owned()
}

/// Sends `args` to `node` and panics unless it answers `OK`.
fn expect_ok(node: &RedisProcess, args: &[&str]) {
    let reply = node.command(args);
    assert!(
        matches!(&reply, RedisReply::Status(ok) if ok == "OK"),
        "{args:?} on {}: {reply:?}",
        node.address()
    );
}

/// `node`'s `CLUSTER NODES`, parsed; `None` if it is not running or does not answer.
fn node_lines(node: &RedisProcess) -> Option<Vec<NodeLine>> {
    if !node.is_running() {
        return None;
    }
    let reply = node.request(&["CLUSTER", "NODES"], IO_TIMEOUT).ok()?;
    let RedisReply::Bulk(_) = reply else {
        return None;
    };
    Some(
        reply
            .as_str()?
            .lines()
            .filter_map(parse_node_line)
            .collect(),
    )
}

/// `<id> <ip:port@bus[,hostname]> <flags> <master> <ping> <pong> <epoch> <link>
/// <slot or range>...`; importing and migrating slots (`[...]`) are left out.
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split(' ').collect();
    let addr = fields.get(1)?;
    let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
    let flags: Vec<&str> = fields.get(2)?.split(',').collect();
    let slots = fields
        .get(8..)
        .unwrap_or_default()
        .iter()
        .filter(|slot| !slot.starts_with('['))
        .filter_map(|slot| match slot.split_once('-') {
            Some((start, end)) => Some(start.parse().ok()?..=end.parse().ok()?),
            None => slot.parse().ok().map(|slot| slot..=slot),
        })
        .collect();
    Some(NodeLine {
        port,
        master: flags.contains(&"master"),
        failed: flags.contains(&"fail"),
        joining: flags.contains(&"handshake") || flags.contains(&"noaddr"),
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_is_xmodem() {
        // The check value of CRC-16/XMODEM.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(crc16_xmodem(b""), 0);
    }

    #[test]
    fn only_a_non_empty_hash_tag_is_hashed() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"no{close"), crc16_xmodem(b"no{close") % SLOTS);
    }

    #[test]
    fn node_lines_parse() {
        let master = parse_node_line(
            "07c3 127.0.0.1:30004@31004,host master - 0 1426238317239 4 connected 0-100 200 [300->-abc]",
        )
        .unwrap();
        assert_eq!(master.port, 30004);
        assert!(master.master && !master.failed);
        assert_eq!(master.slots, [0..=100, 200..=200]);
        let failed =
            parse_node_line("67ed 127.0.0.1:30002@31002 myself,master,fail - 0 0 2 disconnected")
                .unwrap();
        assert!(failed.master && failed.failed && failed.slots.is_empty());
    }
}
