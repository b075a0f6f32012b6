//! The manager's metrics through the `metrics` facade, rendered by a Prometheus
//! exporter, and its per-node health view, against real memcached processes.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tandem::{CookieUpdate, RemoteStore};
use tandem_testkit::MemcachedCluster;

use common::*;

/// The process-wide recorder of this test binary.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
        handle
    })
}

/// The value of every sample line without labels, by metric name.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_histograms_and_node_health_reach_the_exporter() {
    let handle = prometheus();
    let cluster = MemcachedCluster::start(2);
    let store = connect(&cluster).await;
    let a1 = server(&store, "a1").build().unwrap();

    // Local hit, unchanged commit, backup written.
    let id = create(&a1, 1).await;
    settle(&a1).await;
    assert_eq!(read_n(&a1, &id).await, Some(1));
    // Remote load on another server.
    let a2 = server(&store, "a2").build().unwrap();
    assert_eq!(read_n(&a2, &id).await, Some(1));
    // Node down and relocation.
    let dead = id.node().to_owned();
    cluster.node(&dead).kill();
    // The first operation that meets the dead node marks it down: this request's
    // backup, or (it reads the feed of the other servers' announcements every second)
    // the feed. The first request that finds it down moves the session.
    let mut moved = id.clone();
    for _ in 0..2 {
        let mut session = a1.load(Some(moved.as_str())).await.unwrap();
        session.insert("n", &2u32).unwrap();
        if let CookieUpdate::Set { id, .. } = a1.commit(session).await.unwrap().cookie {
            moved = id;
        }
        let down = wait_until(Duration::from_secs(2), || !store.is_available(&node(&dead))).await;
        assert!(down.is_some());
    }
    assert_ne!(moved.node(), dead);
    settle(&a1).await; // the relocated copy is written to the live node

    let stats = a1.stats();
    assert!(stats.loaded_local >= 1 && stats.backups_skipped_unchanged >= 1);
    assert_eq!(stats.relocated, 1);
    assert!(stats.backup_write_micros.count >= 1);
    assert!(stats.stored_bytes.quantile(0.5).unwrap() > 0);
    assert_eq!(a2.stats().loaded_remote, 1);
    assert!(a2.stats().remote_load_micros.count >= 1);

    let nodes = a1.nodes();
    assert_eq!(nodes.len(), 2);
    let (dead_status, failover) = nodes.iter().find(|(n, _)| n.id.as_str() == dead).unwrap();
    assert!(!dead_status.up && !failover);
    assert_eq!(dead_status.down_transitions, 1);
    assert!(dead_status.last_error.is_some());
    let (live_status, _) = nodes.iter().find(|(n, _)| n.id.as_str() != dead).unwrap();
    assert!(live_status.up && live_status.mean_latency.is_some());

    // Both managers publish into the one recorder; the totals are absolute values,
    // so the last export wins: export a1 last.
    a2.export_metrics();
    a1.export_metrics();
    let text = handle.render();
    let values = samples(&text);
    assert_eq!(values["tandem_relocated_total"], 1.0, "{text}");
    assert!(values["tandem_loaded_local_total"] >= 1.0);
    assert!(values["tandem_backups_skipped_unchanged_total"] >= 1.0);
    assert!(
        text.contains(&format!("tandem_node_up{{node=\"{dead}\"}} 0")),
        "{text}"
    );
    assert!(text.contains(&format!(
        "tandem_node_down_transitions_total{{node=\"{dead}\"}} 1"
    )));
    // Every node's count of coalesced reads is published, 0 or not.
    assert!(
        text.contains(&format!(
            "tandem_node_coalesced_reads_total{{node=\"{dead}\"}}"
        )),
        "{text}"
    );
    assert!(text.contains("tandem_backup_write_seconds"), "{text}");
    assert!(text.contains("tandem_remote_load_seconds"));
    assert!(
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .all(|line| line.starts_with("tandem_")),
        "{text}"
    );
}
