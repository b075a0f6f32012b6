//! The kit's replicated deployments with credentials and TLS, against the real
//! binaries: the members log in to each other (replicas to their master, Sentinels
//! to the data servers, `MIGRATE` to the target) and talk TLS to each other, with
//! one test CA for the whole deployment.

use std::time::Duration;

use tandem_testkit::{RedisCluster, RedisOptions, RedisProcess, RedisReply, RedisSentinelGroup};

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
fn a_tls_sentinel_group_with_a_password_fails_over() {
    let group = RedisSentinelGroup::start_with(1, 2, RedisOptions::default().tls().password("p w"));
    let ca = group.tls_files().unwrap().ca_cert.clone();
    for member in group.servers().iter().chain(group.sentinels()) {
        assert_eq!(member.tls_files().unwrap().ca_cert, ca, "one CA for all");
    }
    let sentinels = group.sentinel_addrs().join(",");
    assert_eq!(
        group.url(),
        format!("rediss+sentinel://:p%20w@{sentinels}/tandem")
    );
    let config = std::fs::read_to_string(group.sentinels()[0].dir().join("redis.conf")).unwrap();
    assert!(!config.contains("requirepass"), "{config}");
    assert!(config.contains("tls-replication yes"), "{config}");

    let old = group.master();
    assert_eq!(old.command(&["SET", "k", "v"]), ok());
    group.wait_for_replication();
    let new = group.failover();
    assert_ne!(new.port(), old.port());
    assert_eq!(role(old), "slave");
    assert_eq!(new.command(&["SET", "k2", "v2"]), ok());
    group.wait_for_replication();
    assert_eq!(
        old.command(&["GET", "k2"]),
        RedisReply::Bulk(b"v2".to_vec())
    );

    // A dead master is replaced too: the Sentinels log in to the replica.
    new.kill();
    let newest = group.wait_for_master_change(new, FAILOVER);
    assert_eq!(newest.port(), old.port());
    assert_eq!(
        newest.command(&["GET", "k"]),
        RedisReply::Bulk(b"v".to_vec())
    );
}

#[test]
fn a_tls_cluster_with_an_acl_user_moves_slots_and_fails_over() {
    let options = RedisOptions::default().tls().user("tandem", "s3cret");
    let cluster = RedisCluster::start_with(3, 1, options);
    let addrs: Vec<String> = cluster.nodes().iter().map(RedisProcess::address).collect();
    assert_eq!(
        cluster.url(),
        format!("rediss+cluster://tandem:s3cret@{}", addrs.join(","))
    );
    let ca = &cluster.tls_files().unwrap().ca_cert;
    assert!(
        cluster
            .nodes()
            .iter()
            .all(|n| &n.tls_files().unwrap().ca_cert == ca)
    );

    // MIGRATE logs in to the target (AUTH2) over TLS.
    let (first, second) = (cluster.masters()[0], cluster.masters()[1]);
    let slot = cluster.slots_of(first)[0].clone().next().unwrap();
    let tag = (0..)
        .map(|n| format!("tag{n}"))
        .find(|tag| tandem_testkit::key_slot(tag.as_bytes()) == slot)
        .unwrap();
    let key = format!("{{{tag}}}:k");
    assert_eq!(first.command(&["SET", &key, "v"]), ok());
    assert_eq!(cluster.migrate_slots(first, second, 1), [slot]);
    assert_eq!(
        second.command(&["GET", &key]),
        RedisReply::Bulk(b"v".to_vec())
    );

    // The replica (logged in to its master) takes over a dead one.
    cluster.wait_for_replication();
    second.kill();
    let heir = cluster.wait_for_failover(second, FAILOVER);
    assert_ne!(heir.port(), second.port());
    assert_eq!(
        heir.command(&["GET", &key]),
        RedisReply::Bulk(b"v".to_vec())
    );
}
