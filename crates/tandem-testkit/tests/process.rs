//! The kit against the real memcached binary: every fault it injects must be real.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tandem_testkit::{MemcachedCluster, MemcachedProcess};

/// Sends one raw command and reads one reply line, waiting at most `wait`.
fn request(stream: &mut TcpStream, command: &[u8], wait: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(wait))?;
    stream.write_all(command)?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

fn connect(memcached: &MemcachedProcess) -> TcpStream {
    TcpStream::connect(memcached.addr()).unwrap()
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn starts_a_private_server_that_answers() {
    let memcached = MemcachedProcess::start();
    assert!(memcached.is_running());
    assert_eq!(memcached.addr().ip().to_string(), "127.0.0.1");
    assert_eq!(
        memcached.address(),
        format!("127.0.0.1:{}", memcached.port())
    );
    let pid = memcached.pid().unwrap();
    assert_eq!(memcached.stats()["pid"], pid.to_string());
    assert_eq!(memcached.stats()["curr_items"], "0");

    let mut stream = connect(&memcached);
    let wait = Duration::from_secs(1);
    assert_eq!(
        request(&mut stream, b"ms k 1\r\nv\r\n", wait).unwrap(),
        "HD"
    );
    assert_eq!(memcached.stats()["curr_items"], "1");
}

#[test]
fn keys_lists_what_the_server_holds() {
    let memcached = MemcachedProcess::start();
    let mut stream = connect(&memcached);
    for key in ["app:one", "app:two"] {
        let command = format!("set {key} 0 0 1\r\nx\r\n");
        let reply = request(&mut stream, command.as_bytes(), Duration::from_secs(1)).unwrap();
        assert_eq!(reply, "STORED");
    }
    let mut keys = memcached.keys();
    keys.sort();
    assert_eq!(keys, ["app:one", "app:two"]);
}

#[test]
fn remaining_ttl_reads_what_the_server_keeps() {
    let memcached = MemcachedProcess::start();
    let mut stream = connect(&memcached);
    let wait = Duration::from_secs(1);
    for command in ["set forever 0 0 1\r\nx\r\n", "set minute 0 60 1\r\nx\r\n"] {
        let reply = request(&mut stream, command.as_bytes(), wait).unwrap();
        assert_eq!(reply, "STORED");
    }
    assert_eq!(memcached.remaining_ttl("forever"), Some(-1));
    let minute = memcached.remaining_ttl("minute").unwrap();
    assert!((55..=60).contains(&minute), "{minute} s");
    // Reading it changed nothing.
    assert_eq!(memcached.remaining_ttl("forever"), Some(-1));
    assert_eq!(memcached.remaining_ttl("missing"), None);
}

#[test]
#[should_panic(expected = "not a memcached key")]
fn remaining_ttl_refuses_what_cannot_be_a_key() {
    MemcachedProcess::start().remaining_ttl("two words");
}

#[test]
fn pause_hangs_requests_until_resume() {
    let memcached = MemcachedProcess::start();
    let mut stream = connect(&memcached);
    memcached.pause();
    assert!(memcached.is_running(), "a paused process is still running");

    let started = Instant::now();
    let error = request(&mut stream, b"mn\r\n", Duration::from_millis(300)).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{error:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // New connections are accepted by the kernel but not served either.
    let mut fresh = connect(&memcached);
    assert!(request(&mut fresh, b"mn\r\n", Duration::from_millis(100)).is_err());

    memcached.resume();
    // The request sent while paused is answered now, on both connections.
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"MN\r\n");
    let wait = Duration::from_secs(1);
    assert_eq!(request(&mut stream, b"mn\r\n", wait).unwrap(), "MN");
}

#[test]
fn kill_closes_the_port() {
    let memcached = MemcachedProcess::start();
    let pid = memcached.pid().unwrap();
    memcached.kill();
    assert!(!memcached.is_running());
    assert_eq!(memcached.pid(), None);
    assert!(!process_exists(pid), "the killed process was reaped");
    let error = TcpStream::connect(memcached.addr()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
    memcached.kill(); // killing twice is harmless
}

#[test]
fn kill_works_on_a_paused_process() {
    let memcached = MemcachedProcess::start();
    memcached.pause();
    memcached.kill();
    assert!(!memcached.is_running());
    assert!(TcpStream::connect(memcached.addr()).is_err());
}

#[test]
fn restart_gives_an_empty_server_on_the_same_port() {
    let memcached = MemcachedProcess::start();
    let (port, old_pid) = (memcached.port(), memcached.pid().unwrap());
    let wait = Duration::from_secs(1);
    let mut stream = connect(&memcached);
    assert_eq!(
        request(&mut stream, b"ms k 1\r\nv\r\n", wait).unwrap(),
        "HD"
    );

    memcached.restart();
    assert_eq!(memcached.port(), port);
    let new_pid = memcached.pid().unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(!process_exists(old_pid));
    assert_eq!(memcached.stats()["pid"], new_pid.to_string());
    let mut stream = connect(&memcached);
    assert_eq!(request(&mut stream, b"mg k v\r\n", wait).unwrap(), "EN");

    // From a killed state, and from another thread than the one that started it.
    memcached.kill();
    let memcached = Arc::new(memcached);
    let helper = Arc::clone(&memcached);
    thread::spawn(move || helper.restart()).join().unwrap();
    assert!(memcached.is_running());
    assert_eq!(memcached.port(), port);
}

#[test]
fn restart_works_on_a_paused_process() {
    let memcached = MemcachedProcess::start();
    memcached.pause();
    memcached.restart();
    let mut stream = connect(&memcached);
    let wait = Duration::from_secs(1);
    assert_eq!(request(&mut stream, b"mn\r\n", wait).unwrap(), "MN");
}

#[test]
fn drop_kills_and_reaps_even_a_paused_process() {
    let running = MemcachedProcess::start();
    let paused = MemcachedProcess::start();
    paused.pause();
    let pids = [running.pid().unwrap(), paused.pid().unwrap()];
    drop(running);
    drop(paused);
    for pid in pids {
        assert!(!process_exists(pid), "pid {pid} is still there");
    }
}

#[test]
fn drop_cleans_up_after_a_panicking_test() {
    let outcome = std::panic::catch_unwind(|| {
        let memcached = MemcachedProcess::start();
        memcached.pause();
        std::panic::panic_any(memcached.pid().unwrap());
    });
    let pid = *outcome.unwrap_err().downcast::<u32>().unwrap();
    assert!(!process_exists(pid));
}

#[test]
fn a_cluster_names_its_nodes_in_order() {
    let cluster = MemcachedCluster::start(3);
    assert_eq!(cluster.len(), 3);
    assert!(!cluster.is_empty());
    assert_eq!(cluster.ids(), ["n1", "n2", "n3"]);
    let expected: Vec<String> = cluster
        .processes()
        .iter()
        .enumerate()
        .map(|(index, process)| format!("n{}:127.0.0.1:{}", index + 1, process.port()))
        .collect();
    assert_eq!(cluster.node_spec(), expected.join(","));
    assert_eq!(cluster.node("n2").port(), cluster.processes()[1].port());

    let mut ports: Vec<u16> = cluster.processes().iter().map(|p| p.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    cluster.node("n3").kill();
    assert!(cluster.node("n1").is_running() && cluster.node("n2").is_running());
    assert!(!cluster.node("n3").is_running());
}

#[test]
#[should_panic(expected = "the cluster has no node \"n4\"")]
fn an_unknown_cluster_node_is_a_clear_panic() {
    let cluster = MemcachedCluster::start(1);
    cluster.node("n4");
}

#[test]
#[should_panic(expected = "cannot pause memcached")]
fn pausing_a_killed_process_is_a_clear_panic() {
    let memcached = MemcachedProcess::start();
    memcached.kill();
    memcached.pause();
}
