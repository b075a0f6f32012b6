//! Test-only: real `memcached` and `redis-server` processes for integration tests,
//! with fault injection.
//!
//! [`MemcachedProcess`] starts a private `memcached` on a free loopback port and can
//! kill, pause (`SIGSTOP`), resume (`SIGCONT`) and restart it on the same port, so that
//! tests exercise node failures against the real server instead of a mock.
//! [`MemcachedCluster`] starts several and hands out the node spec
//! (`n1:127.0.0.1:PORT,...`) that Tandem's stores are configured with.
//!
//! [`RedisProcess`] does the same for a standalone `redis-server`, configured by
//! [`RedisOptions`]: a password or an ACL user, TLS (with a test CA and client
//! certificate made at test time, [`TlsFiles`], and a CA that signed nothing,
//! [`untrusted_ca`]), and RDB snapshots taken by [`RedisProcess::save`] that a restart
//! loads; [`RedisOptions::valkey`] runs `valkey-server` instead, with the same
//! configuration. [`RedisProcess::url`] is what a client connects with;
//! [`RedisServers`] starts several independent servers and hands out their node spec
//! (`r1=redis://127.0.0.1:PORT,...`). The kit talks to its Redis servers over a
//! plain-text Unix socket of their own ([`RedisProcess::command`]), so it needs no TLS
//! client and no Redis client crate.
//!
//! Replicated deployments are made of such processes. [`RedisSentinelGroup`] starts
//! a master, its replicas and Sentinels (`redis-server --sentinel`) that watch it
//! under the service name `tandem` with short timers (a master silent for a second is
//! down), hands out the Sentinel URL (`redis+sentinel://127.0.0.1:S1,.../tandem`),
//! finds the current master by asking the Sentinels, waits for the replicas to catch
//! up (replication offsets), asks for a graceful failover and waits for the one that
//! follows a killed or paused master. [`RedisCluster`] starts cluster-enabled servers,
//! makes a
//! Redis Cluster of them with `redis-cli --cluster create`, hands out its URL
//! (`redis+cluster://127.0.0.1:P1,...`), tells which master owns a slot or a key
//! ([`key_slot`]: CRC16 with hash tags, as the servers compute it) and waits for
//! `cluster_state:ok` and for a replica to take over a dead master's slots; it also
//! reshards, moving slots with their keys from one master to another as `redis-cli
//! --cluster reshard` does ([`RedisCluster::migrate_slots`], so that clients get
//! `ASK` and `MOVED` for real), and takes in a new master
//! ([`RedisCluster::add_master`]). A fault is injected through the member's
//! [`RedisProcess`]. Both take the options of a standalone server: with a password
//! or an ACL user the data servers require it and log in to each other with it (the
//! Sentinels have none and log in to the data servers), and with TLS every member
//! speaks TLS only, to clients and to the others, trusting one test CA per group or
//! cluster (`tls_files()`); the URLs then read `rediss+sentinel://:password@...` and
//! `rediss+cluster://:password@...`.
//!
//! Every process is killed and reaped when its handle is dropped, also when the test
//! panics (a Redis server's temporary directory goes with it), and a server that does
//! not start makes a panic that says why (for Redis, with the end of its log).
//!
//! What it is not: a way to run memcached or Redis in production, or a general process
//! supervisor; nor a Redis client (its RESP reader does one command per connection,
//! for setting up and inspecting a test). Every call blocks the calling thread for at most a few seconds (a
//! wait, for at most the limit it is given) and panics with a message on failure,
//! which is what a test wants and nothing else does. It needs the `memcached`,
//! `redis-server` and (for Valkey) `valkey-server` binaries on `PATH`, and `redis-cli`
//! for a cluster (each only when a test starts one; `scripts/test.sh` installs them),
//! and a Unix system (signals, Unix sockets; the pause check reads `/proc` on Linux).
//!
//! Beside the processes, the helpers that every test crate of the workspace needs and
//! that need nothing of Tandem: polling for a condition instead of sleeping
//! ([`wait_until`], [`wait_until_async`], [`wait_until_quiet`]), and the number of
//! property-test cases ([`proptest_cases`]).
//!
//! ```no_run
//! use tandem_testkit::MemcachedCluster;
//!
//! let cluster = MemcachedCluster::start(2);
//! let spec = cluster.node_spec(); // "n1:127.0.0.1:PORT1,n2:127.0.0.1:PORT2"
//! cluster.node("n2").pause(); // n2 now hangs every request
//! cluster.node("n2").resume();
//! cluster.node("n1").restart(); // a fresh, empty memcached on the same port
//! # let _ = spec;
//! ```
//!
//! ```no_run
//! use std::time::Duration;
//! use tandem_testkit::{RedisCluster, RedisSentinelGroup};
//!
//! let group = RedisSentinelGroup::start(2, 3); // a master, 2 replicas, 3 Sentinels
//! let old = group.master();
//! old.kill();
//! let new = group.wait_for_master_change(old, Duration::from_secs(15));
//!
//! let cluster = RedisCluster::start(3, 1); // 3 masters, a replica of each
//! let owner = cluster.master_of_key("{user:42}:cart");
//! owner.kill();
//! let heir = cluster.wait_for_failover(owner, Duration::from_secs(15));
//! # let _ = (new, heir);
//! ```
//!
//! ```no_run
//! use tandem_testkit::{RedisOptions, RedisServers};
//!
//! let options = RedisOptions::default().user("tandem", "secret").tls();
//! let servers = RedisServers::start_with(2, options);
//! // "r1=rediss://tandem:secret@127.0.0.1:PORT1,r2=rediss://tandem:secret@127.0.0.1:PORT2"
//! let spec = servers.node_spec();
//! let ca = &servers.tls_files().unwrap().ca_cert; // the root the client trusts
//! servers.node("r2").pause(); // r2 now hangs every request
//! servers.node("r2").resume();
//! servers.node("r1").kill(); // the port refuses connections
//! servers.node("r1").restart(); // a fresh, empty server on the same port
//! # let _ = (spec, ca);
//! ```

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::User;

mod process;
mod redis;
mod wait;

pub use redis::{
    RedisCluster, RedisOptions, RedisProcess, RedisReply, RedisSentinelGroup, RedisServers,
    TlsFiles, key_slot, untrusted_ca,
};

pub use wait::{
    QUIET_INTERVAL, WAIT_POLL_INTERVAL, wait_until, wait_until_async, wait_until_quiet,
};

/// How many cases a property test runs: the `PROPTEST_CASES` environment variable if
/// it is set (`scripts/fuzz.sh` sets a million), else `default` (what the test suite
/// runs).
///
/// ```
/// # // SAFETY of the test: nothing else reads the environment here.
/// assert!(tandem_testkit::proptest_cases(2_000) > 0);
/// ```
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

/// The binary that is started, looked up on `PATH`.
const BINARY: &str = "memcached";
/// The panic message when [`BINARY`] cannot be found.
const NOT_INSTALLED: &str = "memcached not found on PATH; install it (Debian/Ubuntu: apt-get install memcached) or run scripts/test.sh, which installs it";
/// How many fresh ports [`MemcachedProcess::start`] tries: another test may take the
/// port between the moment it is found free and the moment memcached binds it.
const START_ATTEMPTS: usize = 5;
/// How long a started memcached may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`MemcachedProcess::restart`] keeps trying to bind the old port.
const RESTART_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound for each network step of a readiness or stats check.
const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// A `memcached` process owned by a test, listening on `127.0.0.1` only.
///
/// The server uses 64 MiB of memory, no UDP, and otherwise memcached's defaults (in
/// particular the 1 MiB item size limit, `-I 1m`). All methods take `&self`, so a
/// handle can be shared with helper threads (for example through an `Arc`) to inject
/// a fault while the test waits on a request. Dropping the handle kills the process.
///
/// ```no_run
/// use tandem_testkit::MemcachedProcess;
///
/// let memcached = MemcachedProcess::start();
/// println!("memcached {} listens on {}", memcached.pid().unwrap(), memcached.addr());
/// memcached.kill();
/// assert!(!memcached.is_running());
/// memcached.restart(); // same port, empty cache
/// assert!(memcached.is_running());
/// ```
pub struct MemcachedProcess {
    port: u16,
    running: Mutex<Option<Running>>,
}

/// A live child: the process and its standard error, kept open (and unread) so that
/// a startup failure can be reported with memcached's own explanation.
struct Running {
    child: Child,
    stderr: Option<ChildStderr>,
}

impl MemcachedProcess {
    /// Starts memcached on a free loopback port and waits until it answers.
    ///
    /// # Panics
    ///
    /// If `memcached` is not installed, or no process could be started and verified
    /// as the one answering on its port after a few attempts with fresh ports.
    pub fn start() -> MemcachedProcess {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = process::free_port();
            match launch(port) {
                Ok(running) => {
                    return MemcachedProcess {
                        port,
                        running: Mutex::new(Some(running)),
                    };
                }
                Err(failure) => failures.push(format!("port {port}: {failure}")),
            }
        }
        panic!(
            "could not start memcached in {START_ATTEMPTS} attempts:\n  {}",
            failures.join("\n  ")
        );
    }

    /// The address memcached listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// `127.0.0.1:PORT`, as it appears in a node spec.
    pub fn address(&self) -> String {
        self.addr().to_string()
    }

    /// The port memcached listens on. It stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the current memcached, or `None` after [`kill`](Self::kill)
    /// or when the process has exited.
    pub fn pid(&self) -> Option<u32> {
        let mut running = self.lock();
        reap_if_exited(&mut running);
        running.as_ref().map(|running| running.child.id())
    }

    /// Whether the process is alive. A paused process is alive.
    pub fn is_running(&self) -> bool {
        let mut running = self.lock();
        reap_if_exited(&mut running);
        running.is_some()
    }

    /// Kills the process (`SIGKILL`) and reaps it. The port is closed until
    /// [`restart`](Self::restart). Does nothing if the process is not running.
    pub fn kill(&self) {
        if let Some(running) = self.lock().take() {
            terminate(running);
        }
    }

    /// Stops the process (`SIGSTOP`) and waits until it is stopped. The port keeps
    /// accepting TCP connections (the kernel completes the handshake) but no request
    /// is answered: this is a hung node.
    ///
    /// # Panics
    ///
    /// If the process is not running or does not stop.
    pub fn pause(&self) {
        let pid = self.signal_running(Signal::SIGSTOP, "pause");
        process::wait_for_stopped(BINARY, pid, true);
    }

    /// Continues a paused process (`SIGCONT`) and waits until it runs again.
    ///
    /// # Panics
    ///
    /// If the process is not running or does not continue.
    pub fn resume(&self) {
        let pid = self.signal_running(Signal::SIGCONT, "resume");
        process::wait_for_stopped(BINARY, pid, false);
    }

    /// Kills the process if it is running and starts a fresh, empty memcached on the
    /// same port, waiting until it answers.
    ///
    /// # Panics
    ///
    /// If the port cannot be bound again within a few seconds (for example because
    /// another process took it meanwhile).
    pub fn restart(&self) {
        let mut running = self.lock();
        if let Some(old) = running.take() {
            terminate(old);
        }
        // memcached sets SO_REUSEADDR, so the port is normally free at once; keep
        // trying for a while in case the kernel still holds it.
        let deadline = Instant::now() + RESTART_TIMEOUT;
        loop {
            match launch(self.port) {
                Ok(fresh) => {
                    *running = Some(fresh);
                    return;
                }
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                Err(failure) => panic!(
                    "could not restart memcached on port {} within {RESTART_TIMEOUT:?}: {failure}",
                    self.port
                ),
            }
        }
    }

    /// The server's `stats` (name to value), read over a fresh connection.
    ///
    /// # Panics
    ///
    /// If the server does not answer within a second (for example while paused).
    pub fn stats(&self) -> HashMap<String, String> {
        read_stats(self.addr())
            .unwrap_or_else(|error| panic!("stats of memcached on {}: {error}", self.addr()))
    }

    /// Every key the server holds, as its LRU crawler lists them (`lru_crawler
    /// metadump all`): what anyone who can reach memcached can list.
    ///
    /// # Panics
    ///
    /// If the server does not answer within a second (for example while paused).
    pub fn keys(&self) -> Vec<String> {
        read_keys(self.addr())
            .unwrap_or_else(|error| panic!("keys of memcached on {}: {error}", self.addr()))
    }

    /// The remaining time to live of `key` in seconds as the server reports it (`-1`:
    /// it never expires), read over a fresh connection with the meta command
    /// `mg <key> t`; `None` if the server does not hold `key`. Reading it leaves the
    /// TTL as it is.
    ///
    /// # Panics
    ///
    /// If `key` cannot be a memcached key (empty, over 250 bytes, or with a space or
    /// a control character), or the server does not answer within a second (for
    /// example while paused).
    pub fn remaining_ttl(&self, key: &str) -> Option<i64> {
        read_ttl(self.addr(), key).unwrap_or_else(|error| {
            panic!(
                "remaining TTL of {key:?} on memcached {}: {error}",
                self.addr()
            )
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Running>> {
        // A panicking test thread must not keep the process from being cleaned up.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn signal_running(&self, signal: Signal, action: &str) -> u32 {
        let mut running = self.lock();
        reap_if_exited(&mut running);
        let Some(running) = running.as_ref() else {
            panic!(
                "cannot {action} memcached on port {}: it is not running",
                self.port
            );
        };
        let pid = running.child.id();
        process::send_signal(pid, signal)
            .unwrap_or_else(|error| panic!("cannot {action} memcached (pid {pid}): {error}"));
        pid
    }
}

impl Drop for MemcachedProcess {
    fn drop(&mut self) {
        if let Some(running) = self.lock().take() {
            terminate(running);
        }
    }
}

impl std::fmt::Debug for MemcachedProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedProcess")
            .field("addr", &self.addr())
            .field("pid", &self.pid())
            .finish()
    }
}

/// Several [`MemcachedProcess`]es named `n1`, `n2`, ... in start order.
///
/// ```no_run
/// use tandem_testkit::MemcachedCluster;
///
/// let cluster = MemcachedCluster::start(3);
/// assert_eq!(cluster.len(), 3);
/// cluster.node("n3").kill();
/// assert!(cluster.node("n1").is_running());
/// ```
#[derive(Debug)]
pub struct MemcachedCluster {
    processes: Vec<MemcachedProcess>,
}

impl MemcachedCluster {
    /// Starts `count` memcached processes, each on its own free port.
    ///
    /// # Panics
    ///
    /// If `count` is zero or a process cannot be started (see
    /// [`MemcachedProcess::start`]).
    pub fn start(count: usize) -> MemcachedCluster {
        assert!(count > 0, "a memcached cluster needs at least one node");
        MemcachedCluster {
            processes: (0..count).map(|_| MemcachedProcess::start()).collect(),
        }
    }

    /// The node spec of the cluster: `n1:127.0.0.1:PORT1,n2:127.0.0.1:PORT2,...`.
    pub fn node_spec(&self) -> String {
        self.processes
            .iter()
            .enumerate()
            .map(|(index, process)| format!("n{}:{}", index + 1, process.address()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node ids, `n1` to `nN`.
    pub fn ids(&self) -> Vec<String> {
        (1..=self.processes.len())
            .map(|number| format!("n{number}"))
            .collect()
    }

    /// The process of node `id` (`"n1"` is the first).
    ///
    /// # Panics
    ///
    /// If the cluster has no node `id`.
    pub fn node(&self, id: &str) -> &MemcachedProcess {
        id.strip_prefix('n')
            .and_then(|number| number.parse::<usize>().ok())
            .and_then(|number| number.checked_sub(1))
            .and_then(|index| self.processes.get(index))
            .unwrap_or_else(|| {
                panic!(
                    "the cluster has no node {id:?}; its nodes are {:?}",
                    self.ids()
                )
            })
    }

    /// All processes, `n1` first.
    pub fn processes(&self) -> &[MemcachedProcess] {
        &self.processes
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Always `false`: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }
}

/// Spawns memcached on `port` and waits until this very process answers there.
fn launch(port: u16) -> Result<Running, String> {
    let mut command = Command::new(BINARY);
    command
        .args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-m",
            "64",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // memcached refuses to run as root unless told which user to run as.
    if nix::unistd::geteuid().is_root() {
        command.args(["-u", &current_user_name()]);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("{}", spawn_failure_message(&error)));
    let stderr = child.stderr.take();
    let mut running = Running { child, stderr };
    match wait_until_ready(&mut running, port) {
        Ok(()) => Ok(running),
        Err(failure) => {
            terminate(running);
            Err(failure)
        }
    }
}

fn spawn_failure_message(error: &io::Error) -> String {
    if error.kind() == io::ErrorKind::NotFound {
        NOT_INSTALLED.to_owned()
    } else {
        format!("cannot start {BINARY}: {error}")
    }
}

fn current_user_name() -> String {
    let uid = nix::unistd::geteuid();
    match User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

/// Polls until the child answers `stats` on `port` with its own pid, it exits, or the
/// readiness timeout passes.
fn wait_until_ready(running: &mut Running, port: u16) -> Result<(), String> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let pid = running.child.id();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            let mut output = String::new();
            if let Some(stderr) = running.stderr.as_mut() {
                // The child has exited, so this reads to the end at once.
                let _ = stderr.read_to_string(&mut output);
            }
            return Err(format!("memcached exited ({status}): {}", output.trim()));
        }
        match read_stats(addr) {
            Ok(stats) => {
                return match stats.get("pid").map(String::as_str) {
                    Some(answering) if answering == pid.to_string() => Ok(()),
                    answering => Err(format!(
                        "another process (pid {answering:?}) answers on the port, not ours ({pid})"
                    )),
                };
            }
            Err(error) if Instant::now() >= deadline => {
                return Err(format!(
                    "memcached (pid {pid}) did not answer within {READY_TIMEOUT:?}: {error}"
                ));
            }
            Err(_) => thread::sleep(process::POLL_INTERVAL),
        }
    }
}

/// Opens a fresh connection to `addr` and sends `command`, each step bounded by
/// [`IO_TIMEOUT`]; returns a reader for the answer, whose reads are bounded too.
fn send_command(addr: SocketAddr, command: &[u8]) -> io::Result<BufReader<TcpStream>> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(command)?;
    Ok(BufReader::new(stream))
}

/// The lines memcached answers `command` with, up to its closing `END`, over a fresh
/// connection.
fn answer_lines(addr: SocketAddr, command: &[u8]) -> io::Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut reader = send_command(addr, command)?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before END",
            ));
        }
        let line = line.trim_end();
        if line == "END" {
            return Ok(lines);
        }
        if line.starts_with("ERROR") || line.starts_with("BUSY") {
            return Err(io::Error::other(format!("command refused: {line}")));
        }
        lines.push(line.to_owned());
    }
}

fn read_stats(addr: SocketAddr) -> io::Result<HashMap<String, String>> {
    let mut stats = HashMap::new();
    for line in answer_lines(addr, b"stats\r\n")? {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("STAT"), Some(name), Some(value)) => {
                stats.insert(name.to_owned(), value.to_owned());
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected stats line {line:?}"),
                ));
            }
        }
    }
    Ok(stats)
}

fn read_keys(addr: SocketAddr) -> io::Result<Vec<String>> {
    // `key=<url-encoded key> exp=... la=...` per item.
    Ok(answer_lines(addr, b"lru_crawler metadump all\r\n")?
        .iter()
        .filter_map(|line| line.strip_prefix("key="))
        .filter_map(|rest| rest.split(' ').next())
        .map(percent_decoded)
        .collect())
}

/// The remaining TTL of `key` (see [`MemcachedProcess::remaining_ttl`]).
fn read_ttl(addr: SocketAddr, key: &str) -> io::Result<Option<i64>> {
    if key.is_empty() || key.len() > 250 || key.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a memcached key",
        ));
    }
    let mut line = String::new();
    send_command(addr, format!("mg {key} t\r\n").as_bytes())?.read_line(&mut line)?;
    let answer = line.trim_end();
    if answer == "EN" {
        return Ok(None);
    }
    // `HD t<seconds>`: the flags asked for, and no value.
    answer
        .strip_prefix("HD t")
        .and_then(|ttl| ttl.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected answer to mg: {answer:?}"),
            )
        })
}

/// `text` with its `%XX` escapes decoded (invalid ones left as they are).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Forgets a child that has exited (reaping it), so that no signal is ever sent to a
/// pid the system may have reused.
fn reap_if_exited(running: &mut Option<Running>) {
    if let Some(current) = running.as_mut()
        && process::has_exited(&mut current.child)
    {
        *running = None;
    }
}

/// Continues (in case it is paused), kills and reaps the child.
fn terminate(mut running: Running) {
    process::terminate(&mut running.child);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let message = spawn_failure_message(&io::Error::from(io::ErrorKind::NotFound));
        assert!(message.contains("apt-get install memcached"), "{message}");
        assert!(message.contains("scripts/test.sh"), "{message}");
        let other = spawn_failure_message(&io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(other.starts_with("cannot start memcached"), "{other}");
    }

    #[test]
    fn listed_keys_are_percent_decoded() {
        assert_eq!(percent_decoded("app%3Abak%3Aabc-n1"), "app:bak:abc-n1");
        assert_eq!(percent_decoded("100%25"), "100%");
        assert_eq!(percent_decoded("bad%zz%"), "bad%zz%");
    }
}
