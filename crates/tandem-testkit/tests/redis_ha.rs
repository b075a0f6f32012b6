//! The kit's replicated deployments against the real binaries: a Sentinel group
//! fails over when its master dies or is asked to, and a Redis Cluster hands a dead
//! master's slots to its replica. Each test checks with the servers themselves
//! (`ROLE`, `CLUSTER KEYSLOT`, `CLUSTER INFO`) what the kit reports.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_testkit::{
    RedisCluster, RedisOptions, RedisProcess, RedisReply, RedisSentinelGroup, key_slot,
};

/// Generous: a failover takes a few seconds, more on a busy machine.
const FAILOVER: Duration = Duration::from_secs(20);

fn role(server: &RedisProcess) -> String {
    match server.command(&["ROLE"]) {
        RedisReply::Array(fields) => fields[0].as_str().unwrap().to_owned(),
        other => panic!("ROLE: {other:?}"),
    }
}

fn ok() -> RedisReply {
    RedisReply::Status("OK".into())
}

#[test]
fn a_sentinel_group_replicates_and_fails_over_when_its_master_dies() {
    let group = RedisSentinelGroup::start(2, 3);
    assert_eq!(group.service(), "tandem");
    assert_eq!(group.sentinels().len(), 3);
    assert_eq!(group.servers().len(), 3);
    assert_eq!(
        group.url(),
        format!(
            "redis+sentinel://{}/tandem",
            group.sentinel_addrs().join(",")
        )
    );

    // Every Sentinel reports the first server as master, and it is one.
    let master = group.master();
    assert_eq!(master.port(), group.servers()[0].port());
    assert_eq!(role(master), "master");
    for sentinel in group.sentinels() {
        let reply = sentinel.command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "tandem"]);
        let RedisReply::Array(addr) = reply else {
            panic!("{reply:?}");
        };
        assert_eq!(addr[1].as_str(), Some(master.port().to_string().as_str()));
    }
    let replicas = group.replicas();
    assert_eq!(replicas.len(), 2);
    for replica in &replicas {
        assert_eq!(role(replica), "slave");
    }

    // A write on the master is on every replica once replication is waited for.
    assert_eq!(master.command(&["SET", "k", "v"]), ok());
    group.wait_for_replication();
    for replica in &replicas {
        assert_eq!(
            replica.command(&["GET", "k"]),
            RedisReply::Bulk(b"v".to_vec())
        );
    }

    // Killing the master: the Sentinels promote a replica within seconds, and the
    // data written before is there.
    master.kill();
    let started = Instant::now();
    let new = group.wait_for_master_change(master, FAILOVER);
    println!("failover after a killed master: {:?}", started.elapsed());
    assert_ne!(new.port(), master.port());
    assert_eq!(group.master().port(), new.port());
    assert_eq!(role(new), "master");
    assert_eq!(new.command(&["GET", "k"]), RedisReply::Bulk(b"v".to_vec()));
    assert_eq!(new.command(&["SET", "after", "1"]), ok());
}

#[test]
fn a_graceful_failover_swaps_the_roles() {
    let group = RedisSentinelGroup::start(1, 3);
    let old = group.master();
    assert_eq!(old.command(&["SET", "k", "v"]), ok());
    group.wait_for_replication();

    let started = Instant::now();
    let new = group.failover();
    println!("graceful failover: {:?}", started.elapsed());
    assert_ne!(new.port(), old.port());
    assert_eq!(role(new), "master");
    assert_eq!(role(old), "slave");
    assert_eq!(
        group
            .replicas()
            .iter()
            .map(|r| r.port())
            .collect::<Vec<_>>(),
        [old.port()]
    );

    // The old master now replicates the new one.
    assert_eq!(new.command(&["SET", "k2", "v2"]), ok());
    group.wait_for_replication();
    assert_eq!(
        old.command(&["GET", "k2"]),
        RedisReply::Bulk(b"v2".to_vec())
    );

    // Dropping the group kills every server and Sentinel and removes their
    // directories.
    let members: Vec<_> = group
        .servers()
        .iter()
        .chain(group.sentinels())
        .map(|member| (member.pid().unwrap(), member.dir().to_owned()))
        .collect();
    assert_eq!(members.len(), 5);
    drop(group);
    for (pid, dir) in members {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid}");
        assert!(!dir.exists(), "{}", dir.display());
    }
}

#[test]
fn a_hung_valkey_master_is_replaced() {
    let group = RedisSentinelGroup::start_with(1, 3, RedisOptions::default().valkey());
    let old = group.master();
    assert!(
        old.command(&["INFO", "server"])
            .as_str()
            .unwrap()
            .contains("valkey_version:")
    );
    old.pause();
    let started = Instant::now();
    let new = group.wait_for_master_change(old, FAILOVER);
    println!("failover after a paused master: {:?}", started.elapsed());
    assert_ne!(new.port(), old.port());
    assert_eq!(role(new), "master");

    // Resumed, the old master does not get its role back (the Sentinels make it
    // a replica later, up to ten seconds later, which this test does not wait for).
    old.resume();
    assert!(old.is_running());
    assert_eq!(group.master().port(), new.port());
}

#[test]
fn a_cluster_shares_the_slots_and_a_replica_takes_over_a_dead_master() {
    let cluster = RedisCluster::start(3, 1);
    assert_eq!(cluster.nodes().len(), 6);
    let addrs: Vec<String> = cluster.nodes().iter().map(RedisProcess::address).collect();
    assert_eq!(
        cluster.url(),
        format!("redis+cluster://{}", addrs.join(","))
    );
    for node in cluster.nodes() {
        let info = node.command(&["CLUSTER", "INFO"]);
        let info = info.as_str().unwrap();
        assert!(info.contains("cluster_state:ok\r\n"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384\r\n"), "{info}");
    }

    // Three masters, each owning slots, 16384 in all, and each a master by ROLE.
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let mut owned = 0;
    for master in &masters {
        assert_eq!(role(master), "master");
        let slots = cluster.slots_of(master);
        assert!(!slots.is_empty(), "{} owns no slots", master.address());
        owned += slots.iter().map(|range| range.len()).sum::<usize>();
    }
    assert_eq!(owned, 16384);

    // The kit's slot function agrees with the server's, hash tags included, and
    // the master it names for a key accepts the key.
    let keys = [
        "",
        "a",
        "123456789",
        "user:1000",
        "{user:1000}.followers",
        "prefix{user:1000}",
        "{}empty-tag",
        "{{nested}}",
        "no{close",
        "{a}{b}",
        "ünïcödé",
    ];
    for key in keys {
        let reply = cluster.nodes()[0].command(&["CLUSTER", "KEYSLOT", key]);
        assert_eq!(
            reply,
            RedisReply::Integer(i64::from(key_slot(key.as_bytes()))),
            "{key:?}"
        );
        let master = cluster.master_of_key(key);
        assert_eq!(master.command(&["SET", key, "v"]), ok(), "{key:?}");
    }
    assert_eq!(
        key_slot(b"{user:1000}.followers"),
        key_slot(b"prefix{user:1000}")
    );

    // Killing a master once its replica has its writes: the replica takes its
    // slots and the data, and the cluster is ok again.
    cluster.wait_for_replication();
    let victim = cluster.master_of_key("user:1000");
    victim.kill();
    let started = Instant::now();
    let heir = cluster.wait_for_failover(victim, FAILOVER);
    println!(
        "cluster failover after a killed master: {:?}",
        started.elapsed()
    );
    assert_ne!(heir.port(), victim.port());
    assert_eq!(role(heir), "master");
    assert_eq!(cluster.master_of_key("user:1000").port(), heir.port());
    assert_eq!(
        heir.command(&["GET", "user:1000"]),
        RedisReply::Bulk(b"v".to_vec())
    );
    let masters: Vec<u16> = cluster.masters().iter().map(|m| m.port()).collect();
    assert_eq!(masters.len(), 3);
    assert!(!masters.contains(&victim.port()));
}

/// Keys `{tag}:N` whose slot is one of `slots`: a tag per slot, found by trying.
fn keys_in(slots: &[u16], per_slot: usize) -> Vec<String> {
    slots
        .iter()
        .flat_map(|&slot| {
            let tag = (0..)
                .map(|n| format!("tag{n}"))
                .find(|tag| key_slot(tag.as_bytes()) == slot)
                .unwrap();
            (0..per_slot).map(move |n| format!("{{{tag}}}:{n}"))
        })
        .collect()
}

#[test]
fn a_cluster_moves_slots_with_their_keys_and_takes_in_a_new_master() {
    let mut cluster = RedisCluster::start(3, 0);
    let (first, second) = (cluster.masters()[0], cluster.masters()[1]);
    let (first_port, second_port) = (first.port(), second.port());
    let lowest: Vec<u16> = cluster
        .slots_of(first)
        .into_iter()
        .flatten()
        .take(3)
        .collect();
    let keys = keys_in(&lowest, 25);
    for key in &keys {
        assert_eq!(cluster.master_of_key(key).port(), first_port);
        assert_eq!(first.command(&["SET", key, key]), ok(), "{key}");
    }

    // The slots go with their keys (more than one MIGRATE batch each), and every
    // node agrees on the new owner.
    let started = Instant::now();
    let moved = cluster.migrate_slots(first, second, 3);
    println!("3 slots with 75 keys moved in {:?}", started.elapsed());
    assert_eq!(moved, lowest);
    for key in &keys {
        assert_eq!(cluster.master_of_key(key).port(), second_port);
        assert_eq!(
            second.command(&["GET", key]),
            RedisReply::Bulk(key.as_bytes().to_vec())
        );
        let refused = first.command(&["GET", key]);
        assert!(
            matches!(&refused, RedisReply::Error(moved) if moved.starts_with("MOVED ")),
            "{refused:?}"
        );
    }
    for node in cluster.nodes() {
        let slot = moved[0].to_string();
        assert_eq!(
            node.command(&["CLUSTER", "COUNTKEYSINSLOT", &slot]),
            RedisReply::Integer(if node.port() == second_port { 25 } else { 0 })
        );
    }

    // A new master joins without slots, then takes some.
    let new_port = cluster.add_master().port();
    assert_eq!(cluster.nodes().len(), 4);
    assert_eq!(cluster.nodes()[3].port(), new_port);
    assert_eq!(role(&cluster.nodes()[3]), "master");
    assert_eq!(cluster.masters().len(), 3, "no slots yet");
    for node in cluster.nodes() {
        let nodes = node.command(&["CLUSTER", "NODES"]);
        assert_eq!(nodes.as_str().unwrap().lines().count(), 4);
    }
    let (second, new) = (cluster.masters()[1], &cluster.nodes()[3]);
    let moved = cluster.migrate_slots(second, new, 2);
    assert_eq!(moved, lowest[..2]);
    assert_eq!(cluster.masters().len(), 4);
    assert_eq!(cluster.master_of_key(&keys[0]).port(), new_port);
    assert_eq!(
        new.command(&["GET", &keys[0]]),
        RedisReply::Bulk(keys[0].as_bytes().to_vec())
    );
    cluster.wait_for_state_ok(FAILOVER);
}
