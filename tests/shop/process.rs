//! The two example binaries as processes: started as an operator starts them, sent
//! SIGTERM right after a write, they flush its backup, say so, and exit 0; a shop of
//! the other framework then finds the session in memcached.
//!
//! The binaries are the ones `cargo test` (or `cargo build --examples`) builds next to
//! this test's executable.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http::StatusCode;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use tandem_testkit::MemcachedCluster;

use crate::client::Client;
use crate::common::connect;
use crate::shops::Framework;
use crate::start;

/// How long the binary may take to print its banner, and to stop after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long the stop may take with an idle keep-alive connection open: far less than
/// any keep-alive or shutdown timeout (5 s, 30 s in actix-web), far more than a flush
/// of one session needs.
const IDLE_CONNECTION_LIMIT: Duration = Duration::from_secs(4);

/// The example binary of `framework`, built by cargo under `<profile>/examples/`.
fn binary(framework: Framework) -> PathBuf {
    let name = match framework {
        Framework::Axum => "shop",
        Framework::Actix => "shop-actix",
    };
    let test = std::env::current_exe().expect("the test's executable");
    // <target>/<profile>/deps/<this test>
    let profile = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from <target>/<profile>/deps");
    let path = profile
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the {name} example is not built at {}: run `cargo build --examples` (plain \
         `cargo test` builds it too) before running this test on its own",
        path.display()
    );
    path
}

/// A running binary, its stdout lines arriving on a channel. Killed if dropped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(framework: Framework, args: &[&str]) -> Running {
        let mut child = Command::new(binary(framework))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the example starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line that starts with `prefix`, within `PATIENCE` (blocking: only in
    /// `spawn_blocking` or with nothing else to run).
    fn line_starting(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(error) => panic!("no line {prefix:?} ({error}); printed: {:?}", self.seen),
            }
        }
    }

    fn terminate(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM sent");
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("the child's status") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running: {:?}", self.seen);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `N pending backups written, M unsaved` at the end of a shutdown line.
fn counts(line: &str, prefix: &str) -> (u64, u64) {
    let rest = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{line}"));
    let (written, rest) = rest
        .split_once(" pending backups written, ")
        .unwrap_or_else(|| panic!("{line}"));
    let unsaved = rest
        .strip_suffix(" unsaved")
        .unwrap_or_else(|| panic!("{line}"));
    (written.parse().unwrap(), unsaved.parse().unwrap())
}

/// The binary of `framework` (sticky, route `p1`, asynchronous backups) takes a cart
/// and is sent SIGTERM at once: it prints the flush line and the final one with
/// nothing unsaved, exits 0, and a shop of `other` (route `p2`) takes the session
/// over from memcached with the whole cart.
async fn sigterm_flushes_then_exits(framework: Framework, other: Framework) {
    let cluster = MemcachedCluster::start(2);
    let spec = cluster.node_spec();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--memcached",
        spec.as_str(),
        "--route",
        "p1",
    ];
    let mut running = Running::start(framework, &args);
    let (banner, mut running) = tokio::task::spawn_blocking(move || {
        let banner = running.line_starting("shop listening on http://");
        (banner, running)
    })
    .await
    .unwrap();
    assert!(banner.contains(&format!("memcached {spec}")), "{banner}");
    let address = banner["shop listening on http://".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|error| panic!("{error}: {banner}"));

    let mut client = Client::new(address);
    let reply = client
        .send("POST", "/cart/items?sku=apple&qty=2", None)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{framework}: {}", reply.describe());
    let id = reply.session_cookie().expect("a session cookie");
    let reply = client
        .send("POST", "/cart/items?sku=pear&qty=3", Some(&id))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{framework}: {}", reply.describe());
    // The client's keep-alive connection stays open, idle: it must not hold the stop.
    running.terminate();
    let terminated = Instant::now();
    let (stopping, stopped, status) = tokio::task::spawn_blocking(move || {
        let stopping = running.line_starting("shop stopping: ");
        let stopped = running.line_starting("shop stopped: ");
        let status = running.wait();
        (stopping, stopped, status)
    })
    .await
    .unwrap();
    let took = terminated.elapsed();
    assert!(
        took < IDLE_CONNECTION_LIMIT,
        "{framework}: stopping took {took:?} with an idle connection open"
    );
    drop(client);
    let (_, unsaved) = counts(&stopping, "shop stopping: ");
    assert_eq!(unsaved, 0, "{framework}: {stopping}");
    assert_eq!(
        counts(&stopped, "shop stopped: "),
        (0, 0),
        "{framework}: {stopped}"
    );
    assert!(status.success(), "{framework}: exit {status}");

    let store = connect(&cluster).await;
    let successor = start(other, &["--route", "p2"], &store).await;
    let reply = crate::call(&successor, "GET", "/cart", Some(&id)).await;
    assert_eq!(reply.status, StatusCode::OK, "{other}: {}", reply.body);
    assert_eq!(
        reply.json()["items"],
        json!({"apple": 2, "pear": 3}),
        "the {framework} binary's last write, read by the {other} shop"
    );
    assert!(reply.cookie_value().ends_with(".p2"), "taken over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_binary_flushes_on_sigterm() {
    sigterm_flushes_then_exits(Framework::Axum, Framework::Actix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actix_binary_flushes_on_sigterm() {
    sigterm_flushes_then_exits(Framework::Actix, Framework::Axum).await;
}
