//! The deployments of the Redis fault matrix and how its faults hit them. The kit's
//! calls block: everything here runs on a blocking thread.

use std::thread::sleep;
use std::time::{Duration, Instant};

use tandem_testkit::{RedisCluster, RedisOptions, RedisProcess, RedisReply, RedisSentinelGroup};

use crate::Fault;
use crate::matrix::load::Ledger;

/// How long a failover may take: the Sentinels and the Cluster declare a master down
/// after a second without an answer, then elect and promote, on a busy machine.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);
/// How many slots the resharding row moves (of the about 5,461 a master owns): with
/// 100 sessions, the keys of about 18 of them move under traffic.
const RESHARD_SLOTS: usize = 3000;
/// How long a Sentinel must see its clock jump to enter TILT mode (no failover for
/// 30 s), with a margin.
const TILT_TRIGGER: Duration = Duration::from_millis(2500);

/// Which replicated deployment the Tandem node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A master, 2 replicas, 3 Sentinels.
    Sentinel,
    /// 3 masters with a replica each.
    Cluster,
}

/// One Tandem node's processes.
pub enum Deployment {
    Sentinel(RedisSentinelGroup),
    Cluster(RedisCluster),
}

impl Deployment {
    /// The deployment for a row of `fault`: with snapshots for
    /// [`Fault::RestartFromOlderSnapshot`].
    pub fn start(kind: Kind, fault: Fault) -> Deployment {
        match kind {
            Kind::Sentinel => {
                let options = if fault == Fault::RestartFromOlderSnapshot {
                    RedisOptions::default().persistence()
                } else {
                    RedisOptions::default()
                };
                Deployment::Sentinel(RedisSentinelGroup::start_with(2, 3, options))
            }
            Kind::Cluster => Deployment::Cluster(RedisCluster::start(3, 1)),
        }
    }

    pub fn url(&self) -> String {
        match self {
            Deployment::Sentinel(group) => group.url(),
            Deployment::Cluster(cluster) => cluster.url(),
        }
    }

    /// Puts the deployment through `fault` and waits until it has every replica
    /// again. Returns when it had a master again: the failover seen, or the
    /// restarted master answering.
    pub fn inject(&self, fault: Fault, hold: Duration, ledger: &Ledger) -> Instant {
        match self {
            Deployment::Sentinel(group) => sentinel(group, fault, hold, ledger),
            Deployment::Cluster(cluster) => cluster_fault(cluster, fault, hold),
        }
    }
}

fn sentinel(group: &RedisSentinelGroup, fault: Fault, hold: Duration, ledger: &Ledger) -> Instant {
    let old = group.master();
    let recovered = match fault {
        Fault::KillMaster => {
            old.kill();
            let new = group.wait_for_master_change(old, FAILOVER_TIMEOUT);
            let recovered = Instant::now();
            sleep(hold);
            // It comes back as it started, a master, and empty.
            old.restart();
            replica_of(old, new);
            recovered
        }
        Fault::HangMaster => {
            old.pause();
            let new = group.wait_for_master_change(old, FAILOVER_TIMEOUT);
            let recovered = Instant::now();
            sleep(hold);
            old.resume();
            // The Sentinels make the old master a replica when they notice that it
            // still says master, some seconds later; meanwhile it takes writes from
            // clients that still talk to it. The store's watch (one probe interval)
            // must have left it by now.
            sleep(Duration::from_millis(500));
            replica_of(old, new);
            recovered
        }
        Fault::GracefulFailover => {
            group.failover();
            Instant::now()
        }
        Fault::RestartFromOlderSnapshot => {
            // Every value acknowledged so far is in the snapshot.
            ledger.set_floors();
            old.save();
            sleep(hold);
            let stopped = Instant::now();
            group.sentinels().iter().for_each(RedisProcess::pause);
            old.kill();
            old.restart();
            let recovered = Instant::now();
            sleep(TILT_TRIGGER.saturating_sub(stopped.elapsed()));
            group.sentinels().iter().for_each(RedisProcess::resume);
            assert_eq!(
                group.master().port(),
                old.port(),
                "the Sentinels failed the master over"
            );
            recovered
        }
        Fault::Reshard => unreachable!("a Cluster row"),
    };
    group.wait_for_replication();
    recovered
}

/// Makes `server` a replica of `master` now, as the Sentinels would at their next
/// look at it (and as the kit's graceful failover does).
fn replica_of(server: &RedisProcess, master: &RedisProcess) {
    let port = master.port().to_string();
    let reply = server.command(&["REPLICAOF", "127.0.0.1", &port]);
    assert_eq!(reply, RedisReply::Status("OK".to_owned()));
}

fn cluster_fault(cluster: &RedisCluster, fault: Fault, hold: Duration) -> Instant {
    let old = cluster.masters()[0];
    let recovered = match fault {
        Fault::KillMaster => {
            old.kill();
            cluster.wait_for_failover(old, FAILOVER_TIMEOUT);
            let recovered = Instant::now();
            sleep(hold);
            // It keeps its cluster configuration and rejoins as a replica.
            old.restart();
            recovered
        }
        Fault::HangMaster => {
            let first = *cluster.slots_of(old)[0].start();
            old.pause();
            // `wait_for_failover` would wait for every running node to say the
            // cluster is ok, which a stopped one never says.
            let taken = poll(|| cluster.node_for_slot(first).port() != old.port());
            assert!(taken, "no replica took the slots of the hung master");
            let recovered = Instant::now();
            sleep(hold);
            old.resume();
            recovered
        }
        Fault::GracefulFailover => {
            let replica = cluster
                .nodes()
                .iter()
                .find(|node| replica_port(node) == Some(old.port()))
                .expect("the master has a replica");
            let reply = replica.command(&["CLUSTER", "FAILOVER"]);
            assert_eq!(reply, RedisReply::Status("OK".to_owned()));
            let promoted = poll(|| replica_port(old) == Some(replica.port()));
            assert!(promoted, "CLUSTER FAILOVER did not complete");
            Instant::now()
        }
        Fault::Reshard => {
            let to = cluster.masters()[1];
            let moved = cluster.migrate_slots(old, to, RESHARD_SLOTS);
            assert_eq!(moved.len(), RESHARD_SLOTS);
            let recovered = Instant::now();
            sleep(hold);
            // No master changed: nothing to rejoin.
            return recovered;
        }
        Fault::RestartFromOlderSnapshot => unreachable!("a Sentinel row"),
    };
    // Until then the old master is not a replica of its heir yet.
    let rejoined = poll(|| replica_port(old).is_some());
    assert!(rejoined, "the old master did not rejoin");
    cluster.wait_for_state_ok(FAILOVER_TIMEOUT);
    cluster.wait_for_replication();
    recovered
}

/// Whether `condition` holds within [`FAILOVER_TIMEOUT`], asking every 20 ms.
fn poll(mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() > FAILOVER_TIMEOUT {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
    true
}

/// The port of the master `node` replicates (`ROLE`), if it is a replica.
fn replica_port(node: &RedisProcess) -> Option<u16> {
    let RedisReply::Array(fields) = node.command(&["ROLE"]) else {
        return None;
    };
    if fields.first()?.as_str()? != "slave" {
        return None;
    }
    match fields.get(2)? {
        RedisReply::Integer(port) => u16::try_from(*port).ok(),
        _ => None,
    }
}
