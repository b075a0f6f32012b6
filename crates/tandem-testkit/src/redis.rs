//! Real `redis-server` processes: standalone servers with passwords, ACL users, TLS
//! and RDB snapshots, and the same faults as the memcached processes.
//!
//! Every server also listens on a Unix socket in its own directory. That socket
//! speaks plain RESP even when TCP is TLS-only, and is how the kit itself talks to
//! the server (readiness, [`RedisProcess::save`], [`RedisProcess::command`]): the kit
//! needs no TLS client.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::process::{self, TempDir};

mod cluster;
mod config;
mod replication;
mod resp;
mod sentinel;
mod servers;
mod tls;

pub use cluster::{RedisCluster, key_slot};
pub use resp::RedisReply;
pub use sentinel::RedisSentinelGroup;
pub use servers::RedisServers;
pub use tls::{TlsFiles, untrusted_ca};

use config::{Topology, config_text, topology_text, url_credentials};
use replication::{poll, role, wait_for_replicas_of};
use resp::Connection;
use tls::TlsMaterial;

/// The binary that is started, looked up on `PATH`.
const BINARY: &str = "redis-server";
/// The Valkey server binary ([`RedisOptions::valkey`]).
const VALKEY_BINARY: &str = "valkey-server";
/// The panic message when the server binary cannot be found.
const NOT_INSTALLED: &str = "not found on PATH; install it (Debian/Ubuntu: apt-get install redis-server, or valkey-server from bookworm-backports) or run scripts/test.sh, which installs both";
/// How many fresh ports [`RedisProcess::start`] tries: another test may take the port
/// between the moment it is found free and the moment the server binds it.
const START_ATTEMPTS: usize = 5;
/// How long a started server may take to answer (loading a snapshot included).
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`RedisProcess::restart`] keeps trying to bind the old port.
const RESTART_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound for each network step of the kit's own requests.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound for a `SAVE`, which writes the whole data set before it answers.
const SAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many lines of the server's log a start failure shows.
const LOG_TAIL_LINES: usize = 15;

const CONFIG_FILE: &str = "redis.conf";
const LOG_FILE: &str = "redis.log";
const SOCKET_FILE: &str = "redis.sock";
const SNAPSHOT_FILE: &str = "dump.rdb";
/// A cluster node's own record of the cluster, kept across restarts.
const CLUSTER_CONFIG_FILE: &str = "nodes.conf";

/// How a [`RedisProcess`] is configured: authentication, TLS and persistence.
///
/// Builder-style; the default is a plain-text server that anyone on the machine can
/// use without a password and that keeps nothing across a restart.
///
/// ```
/// use tandem_testkit::RedisOptions;
///
/// let options = RedisOptions::default().user("tandem", "secret").tls().persistence();
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct RedisOptions {
    password: Option<String>,
    user: Option<(String, String)>,
    tls: Tls,
    persistence: bool,
    valkey: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Tls {
    #[default]
    Off,
    ServerOnly,
    ClientAuth,
}

impl RedisOptions {
    /// The default options (see the type).
    pub fn new() -> RedisOptions {
        RedisOptions::default()
    }

    /// Protects the default user with `password` (`requirepass`): every connection
    /// has to `AUTH password` first.
    pub fn password(mut self, password: &str) -> RedisOptions {
        self.password = Some(password.to_owned());
        self
    }

    /// Adds the ACL user `name` with `password`, allowed every command on every key
    /// and channel (`~* &* +@all`), and turns the default user off, so that only
    /// `AUTH name password` works. With [`password`](Self::password) as well, the
    /// default user stays on with that password instead; the [URL](RedisProcess::url)
    /// names the ACL user either way.
    ///
    /// # Panics
    ///
    /// If `name` is `default` (use [`password`](Self::password) for the default
    /// user).
    pub fn user(mut self, name: &str, password: &str) -> RedisOptions {
        assert!(
            name != "default",
            "the ACL user of RedisOptions::user cannot be \"default\"; use RedisOptions::password for the default user"
        );
        self.user = Some((name.to_owned(), password.to_owned()));
        self
    }

    /// The server speaks TLS only (`tls-port`, with `port 0`), with a certificate
    /// signed by a test CA ([`TlsFiles`]), and does not ask clients for a
    /// certificate.
    pub fn tls(mut self) -> RedisOptions {
        self.tls = Tls::ServerOnly;
        self
    }

    /// [`tls`](Self::tls), and the server refuses a client that does not present a
    /// certificate signed by the test CA ([`TlsFiles::client_cert`]).
    pub fn tls_client_auth(mut self) -> RedisOptions {
        self.tls = Tls::ClientAuth;
        self
    }

    /// The server keeps an RDB snapshot in its own directory, and
    /// [`restart`](RedisProcess::restart) loads it. A snapshot is written only by
    /// [`save`](RedisProcess::save), never on a timer, so a restart brings back
    /// exactly what the last `save` saw: a crash (`SIGKILL`) after a snapshot.
    ///
    /// Without it the server has no snapshot (`save ""`, `appendonly no`) and every
    /// restart starts empty.
    pub fn persistence(mut self) -> RedisOptions {
        self.persistence = true;
        self
    }

    /// Runs `valkey-server` instead of `redis-server`, with the same configuration
    /// (Valkey reads Redis's configuration and speaks its protocol).
    pub fn valkey(mut self) -> RedisOptions {
        self.valkey = true;
        self
    }

    /// The server binary these options start.
    pub fn binary(&self) -> &'static str {
        if self.valkey { VALKEY_BINARY } else { BINARY }
    }

    fn is_tls(&self) -> bool {
        self.tls != Tls::Off
    }

    /// These options without a password or an ACL user: a Sentinel's.
    fn without_auth(&self) -> RedisOptions {
        RedisOptions {
            password: None,
            user: None,
            ..self.clone()
        }
    }

    /// The `AUTH` arguments the kit sends, if any.
    fn auth(&self) -> Option<Vec<&str>> {
        match (&self.user, &self.password) {
            (Some((name, password)), _) => Some(vec!["AUTH", name, password]),
            (None, Some(password)) => Some(vec!["AUTH", password]),
            (None, None) => None,
        }
    }
}

/// A `redis-server` process owned by a test, listening on `127.0.0.1` only, in a
/// temporary directory of its own (configuration, log, Unix socket, snapshot) that is
/// removed when the handle is dropped.
///
/// The server runs with Redis's defaults except for what [`RedisOptions`] sets, the
/// listeners, no snapshots unless asked for, and `enable-debug-command local` (so a
/// test may `DEBUG SLEEP`). All methods take `&self`, so a handle can be shared with
/// helper threads (for example through an `Arc`) to inject a fault while the test
/// waits on a request. Dropping the handle kills the process.
///
/// ```no_run
/// use tandem_testkit::{RedisOptions, RedisProcess};
///
/// let redis = RedisProcess::start_with(RedisOptions::default().password("secret").persistence());
/// assert_eq!(redis.url(), format!("redis://:secret@127.0.0.1:{}", redis.port()));
/// redis.command(&["SET", "k", "v"]);
/// redis.save();
/// redis.kill();
/// redis.restart(); // same port, and the snapshot is loaded
/// assert_eq!(redis.keys(), ["k"]);
/// ```
pub struct RedisProcess {
    port: u16,
    options: RedisOptions,
    tls: Option<Arc<TlsMaterial>>,
    running: Mutex<Option<Child>>,
    topology: Topology,
    /// Dropped after the process is killed (see `Drop`).
    dir: TempDir,
}

impl RedisProcess {
    /// Starts a plain-text server without password or persistence on a free loopback
    /// port and waits until it answers.
    ///
    /// # Panics
    ///
    /// As [`start_with`](Self::start_with).
    pub fn start() -> RedisProcess {
        RedisProcess::start_with(RedisOptions::default())
    }

    /// Starts a server configured by `options` on a free loopback port and waits
    /// until it answers. A TLS server gets certificates of its own ([`TlsFiles`]).
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed, or no server could be started and
    /// verified as the one listening on its port after a few attempts with fresh
    /// ports; the message shows the end of the server's log.
    pub fn start_with(options: RedisOptions) -> RedisProcess {
        let tls = options.is_tls().then(TlsMaterial::generate);
        RedisProcess::start_sharing(options, tls)
    }

    /// [`start_with`](Self::start_with), with TLS files made once for several
    /// servers.
    fn start_sharing(options: RedisOptions, tls: Option<Arc<TlsMaterial>>) -> RedisProcess {
        RedisProcess::start_as(options, tls, Topology::Standalone)
    }

    /// [`start_sharing`](Self::start_sharing) for a member of a replicated
    /// deployment. A cluster node gets a fresh bus port with every port it tries.
    fn start_as(
        options: RedisOptions,
        tls: Option<Arc<TlsMaterial>>,
        topology: Topology,
    ) -> RedisProcess {
        let mut process = RedisProcess {
            port: 0,
            options,
            tls,
            running: Mutex::new(None),
            topology,
            dir: TempDir::new("redis"),
        };
        let mut failures = Vec::new();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = process::free_port();
            if let Topology::ClusterNode { bus_port } = &mut process.topology {
                *bus_port = process::free_port();
            }
            match process.launch(port) {
                Ok(child) => {
                    process.port = port;
                    *process.lock() = Some(child);
                    return process;
                }
                Err(failure) => {
                    failures.push(format!("port {port}: {}", failure.reason));
                    last_log = failure.log_tail;
                }
            }
        }
        panic!(
            "could not start {} in {START_ATTEMPTS} attempts:\n  {}\n{last_log}",
            process.kind(),
            failures.join("\n  ")
        );
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.addr().to_string()
    }

    /// The port the server listens on (TLS-only for a TLS server). It stays the same
    /// across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL a client connects with: `redis://127.0.0.1:PORT`, with the
    /// credentials of the options (`redis://:password@...`,
    /// `redis://user:password@...`, percent-encoded), and `rediss://` for TLS.
    pub fn url(&self) -> String {
        let scheme = if self.options.is_tls() {
            "rediss"
        } else {
            "redis"
        };
        let credentials = url_credentials(&self.options);
        format!("{scheme}://{credentials}{}", self.address())
    }

    /// The options the server was started with.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The CA and client certificate of a TLS server; `None` for a plain-text one.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_deref().map(TlsMaterial::files)
    }

    /// The process id of the current server, or `None` after [`kill`](Self::kill)
    /// or when the process has exited.
    pub fn pid(&self) -> Option<u32> {
        let mut running = self.lock();
        reap_if_exited(&mut running);
        running.as_ref().map(Child::id)
    }

    /// Whether the process is alive. A paused process is alive.
    pub fn is_running(&self) -> bool {
        let mut running = self.lock();
        reap_if_exited(&mut running);
        running.is_some()
    }

    /// Kills the process (`SIGKILL`: no shutdown, no last snapshot) and reaps it.
    /// The port is closed until [`restart`](Self::restart). Does nothing if the
    /// process is not running.
    pub fn kill(&self) {
        if let Some(mut child) = self.lock().take() {
            process::terminate(&mut child);
        }
    }

    /// Stops the process (`SIGSTOP`) and waits until it is stopped. The port keeps
    /// accepting TCP connections (the kernel completes the handshake) but no request
    /// is answered, and a TLS handshake does not complete: this is a hung node.
    ///
    /// # Panics
    ///
    /// If the process is not running or does not stop.
    pub fn pause(&self) {
        let pid = self.signal_running(Signal::SIGSTOP, "pause");
        process::wait_for_stopped(self.options.binary(), pid, true);
    }

    /// Continues a paused process (`SIGCONT`) and waits until it runs again.
    ///
    /// # Panics
    ///
    /// If the process is not running or does not continue.
    pub fn resume(&self) {
        let pid = self.signal_running(Signal::SIGCONT, "resume");
        process::wait_for_stopped(self.options.binary(), pid, false);
    }

    /// Kills the process if it is running and starts a new server on the same port
    /// with the same options (and certificates), waiting until it answers. With
    /// [`persistence`](RedisOptions::persistence) it loads the last
    /// [`save`](Self::save); without, it starts empty.
    ///
    /// # Panics
    ///
    /// If the port cannot be bound again within a few seconds (for example because
    /// another process took it meanwhile), or the server does not start.
    pub fn restart(&self) {
        let mut running = self.lock();
        if let Some(mut old) = running.take() {
            process::terminate(&mut old);
        }
        if !self.options.persistence {
            // Only a `SAVE` sent through `command` can have written one.
            let _ = std::fs::remove_file(self.dir.path().join(SNAPSHOT_FILE));
        }
        // The port is normally free at once (the server sets SO_REUSEADDR); keep
        // trying for a while in case the kernel still holds it.
        let deadline = Instant::now() + RESTART_TIMEOUT;
        loop {
            match self.launch(self.port) {
                Ok(fresh) => {
                    *running = Some(fresh);
                    return;
                }
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                Err(failure) => panic!(
                    "could not restart redis-server on port {} within {RESTART_TIMEOUT:?}: {}\n{}",
                    self.port, failure.reason, failure.log_tail
                ),
            }
        }
    }

    /// Writes a snapshot now (a synchronous `SAVE`), for [`restart`](Self::restart)
    /// to load.
    ///
    /// # Panics
    ///
    /// If the server was started without [`persistence`](RedisOptions::persistence),
    /// or does not save within a few seconds (for example while paused).
    pub fn save(&self) {
        assert!(
            self.options.persistence,
            "save() on redis-server {}: it was started without RedisOptions::persistence(), so a restart would not load the snapshot",
            self.addr()
        );
        match self.request(&["SAVE"], SAVE_TIMEOUT) {
            Ok(RedisReply::Status(status)) if status == "OK" => {}
            Ok(reply) => panic!("SAVE on redis-server {}: {reply:?}", self.addr()),
            Err(error) => panic!("SAVE on redis-server {}: {error}", self.addr()),
        }
    }

    /// Sends one command (`args`, the name first) and returns the server's reply, an
    /// error reply included, over a fresh connection that is authenticated as the
    /// options say. It goes through the server's Unix socket, so it works on a TLS
    /// server too.
    ///
    /// ```no_run
    /// use tandem_testkit::{RedisProcess, RedisReply};
    ///
    /// let redis = RedisProcess::start();
    /// assert_eq!(redis.command(&["SET", "k", "v"]), RedisReply::Status("OK".into()));
    /// assert_eq!(redis.command(&["DBSIZE"]), RedisReply::Integer(1));
    /// ```
    ///
    /// # Panics
    ///
    /// If the server does not answer within a second (for example while paused, or
    /// after [`kill`](Self::kill)).
    pub fn command(&self, args: &[&str]) -> RedisReply {
        self.request(args, IO_TIMEOUT)
            .unwrap_or_else(|error| panic!("{args:?} on redis-server {}: {error}", self.addr()))
    }

    /// Every key of database 0 (`KEYS *`), sorted.
    ///
    /// # Panics
    ///
    /// As [`command`](Self::command), or if a key is not UTF-8.
    pub fn keys(&self) -> Vec<String> {
        let reply = self.command(&["KEYS", "*"]);
        let RedisReply::Array(keys) = &reply else {
            panic!("KEYS on redis-server {}: {reply:?}", self.addr());
        };
        let mut keys: Vec<String> = keys
            .iter()
            .map(|key| {
                key.as_str()
                    .unwrap_or_else(|| panic!("a key that is not UTF-8: {key:?}"))
                    .to_owned()
            })
            .collect();
        keys.sort();
        keys
    }

    /// The remaining time to live of `key` in seconds as the server reports it
    /// (`TTL`; `-1`: it never expires); `None` if the server does not hold `key`.
    ///
    /// # Panics
    ///
    /// As [`command`](Self::command).
    pub fn remaining_ttl(&self, key: &str) -> Option<i64> {
        match self.command(&["TTL", key]) {
            RedisReply::Integer(-2) => None,
            RedisReply::Integer(ttl) => Some(ttl),
            reply => panic!("TTL {key:?} on redis-server {}: {reply:?}", self.addr()),
        }
    }

    /// The server's own temporary directory: its configuration (`redis.conf`), log
    /// (`redis.log`), Unix socket (`redis.sock`) and snapshot (`dump.rdb`). It is
    /// removed when the handle is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far, of every start on this handle: what it printed when
    /// it started, refused a client's TLS handshake, loaded a snapshot and so on.
    pub fn log(&self) -> String {
        std::fs::read(self.dir.path().join(LOG_FILE))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// What the process is, for messages: `redis-server`, or `redis-server
    /// --sentinel` for a Sentinel.
    fn kind(&self) -> String {
        match self.topology {
            Topology::Sentinel { .. } => format!("{} --sentinel", self.options.binary()),
            _ => self.options.binary().to_owned(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        // A panicking test thread must not keep the process from being cleaned up.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn signal_running(&self, signal: Signal, action: &str) -> u32 {
        let mut running = self.lock();
        reap_if_exited(&mut running);
        let Some(child) = running.as_ref() else {
            panic!(
                "cannot {action} redis-server on port {}: it is not running",
                self.port
            );
        };
        let pid = child.id();
        process::send_signal(pid, signal)
            .unwrap_or_else(|error| panic!("cannot {action} redis-server (pid {pid}): {error}"));
        pid
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.path().join(SOCKET_FILE)
    }

    /// An authenticated connection to the Unix socket, each step bounded by
    /// `timeout`.
    fn admin_connection(&self, timeout: Duration) -> io::Result<Connection<UnixStream>> {
        let stream = UnixStream::connect(self.socket_path())?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        authenticated(Connection::new(stream), &self.options)
    }

    fn request(&self, args: &[&str], timeout: Duration) -> io::Result<RedisReply> {
        self.admin_connection(timeout)?.request(args)
    }

    /// Spawns the server on `port` and waits until this very process answers there.
    fn launch(&self, port: u16) -> Result<Child, LaunchFailure> {
        let dir = self.dir.path();
        let config_path = dir.join(CONFIG_FILE);
        // A Sentinel rewrites its configuration with what it learnt (its id, the
        // current master, the other Sentinels): a restart on the same port keeps it.
        let keep = matches!(self.topology, Topology::Sentinel { .. })
            && port == self.port
            && config_path.is_file();
        if !keep {
            let mut config = config_text(dir, port, &self.options, self.tls.as_deref());
            config.push_str(&topology_text(&self.topology));
            std::fs::write(&config_path, config)
                .unwrap_or_else(|error| panic!("cannot write {}: {error}", config_path.display()));
        }
        let _ = std::fs::remove_file(self.socket_path());
        let log_path = dir.join(LOG_FILE);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", log_path.display()));
        let log_start = log.metadata().map_or(0, |metadata| metadata.len());
        let log_for_stderr = log
            .try_clone()
            .unwrap_or_else(|error| panic!("cannot share {}: {error}", log_path.display()));
        let binary = self.options.binary();
        let mut command = Command::new(binary);
        command.arg(&config_path);
        if matches!(self.topology, Topology::Sentinel { .. }) {
            command.arg("--sentinel");
        }
        let mut child = command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("{}", spawn_failure_message(binary, &error)));
        match self.wait_until_ready(&mut child, port) {
            Ok(()) => Ok(child),
            Err(reason) => {
                process::terminate(&mut child);
                Err(LaunchFailure {
                    reason,
                    log_tail: format!("  the end of its log:\n{}", log_tail(&log_path, log_start)),
                })
            }
        }
    }

    /// Polls until the child answers on its Unix socket and on `port`, it exits, or
    /// the readiness timeout passes.
    fn wait_until_ready(&self, child: &mut Child, port: u16) -> Result<(), String> {
        let pid = child.id();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server exited ({status})"));
            }
            match self.check_ready(pid, port) {
                Ok(()) => return Ok(()),
                Err(NotReady::Never(failure)) => return Err(failure),
                Err(NotReady::Yet(error)) if Instant::now() >= deadline => {
                    return Err(format!(
                        "redis-server (pid {pid}) did not answer within {READY_TIMEOUT:?}: {error}"
                    ));
                }
                Err(NotReady::Yet(_)) => thread::sleep(process::POLL_INTERVAL),
            }
        }
    }

    fn check_ready(&self, pid: u32, port: u16) -> Result<(), NotReady> {
        // The socket is created after the TCP listeners are bound (the server exits
        // if it cannot bind them), and answers PONG once a snapshot is loaded.
        let mut admin = self.admin_connection(IO_TIMEOUT).map_err(NotReady::yet)?;
        match admin.request(&["PING"]).map_err(NotReady::yet)? {
            RedisReply::Status(pong) if pong == "PONG" => {}
            RedisReply::Error(loading) if loading.starts_with("LOADING") => {
                return Err(NotReady::Yet(loading));
            }
            other => return Err(NotReady::Never(format!("PING answered {other:?}"))),
        }
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(NotReady::yet)?;
        if self.options.is_tls() {
            // No TLS client here: that the port accepts is all there is to check.
            return Ok(());
        }
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(NotReady::yet)?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .map_err(NotReady::yet)?;
        let mut tcp =
            authenticated(Connection::new(stream), &self.options).map_err(NotReady::yet)?;
        let info = tcp.request(&["INFO", "server"]).map_err(NotReady::yet)?;
        let answering = info.as_str().and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("process_id:"))
                .map(str::to_owned)
        });
        match answering {
            Some(answering) if answering == pid.to_string() => Ok(()),
            answering => Err(NotReady::Never(format!(
                "another process (pid {answering:?}) answers on the port, not ours ({pid})"
            ))),
        }
    }
}

/// Why a launch failed, and what the server logged meanwhile.
struct LaunchFailure {
    reason: String,
    log_tail: String,
}

/// Why a server is not ready: not yet (keep polling), or never (give up).
enum NotReady {
    Yet(String),
    Never(String),
}

impl NotReady {
    fn yet(error: io::Error) -> NotReady {
        NotReady::Yet(error.to_string())
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        // Before `dir` is removed, which happens after this.
        if let Some(mut child) = self.lock().take() {
            process::terminate(&mut child);
        }
    }
}

impl std::fmt::Debug for RedisProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisProcess")
            .field("url", &self.url())
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

/// Sends the `AUTH` of `options`, if any, on `connection`.
fn authenticated<S: io::Read + io::Write>(
    mut connection: Connection<S>,
    options: &RedisOptions,
) -> io::Result<Connection<S>> {
    if let Some(auth) = options.auth() {
        match connection.request(&auth)? {
            RedisReply::Status(ok) if ok == "OK" => {}
            refused => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("AUTH refused: {refused:?}"),
                ));
            }
        }
    }
    Ok(connection)
}

/// The last lines of what the log at `path` gained from byte `start` on.
fn log_tail(path: &Path, start: u64) -> String {
    let mut text = Vec::new();
    let read = File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(start))?;
        file.read_to_end(&mut text)
    });
    if let Err(error) = read {
        return format!("    (unreadable: {error})");
    }
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return "    (empty)".to_owned();
    }
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
        .iter()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn spawn_failure_message(binary: &str, error: &io::Error) -> String {
    if error.kind() == io::ErrorKind::NotFound {
        format!("{binary} {NOT_INSTALLED}")
    } else {
        format!("cannot start {binary}: {error}")
    }
}

/// Forgets a child that has exited (reaping it), so that no signal is ever sent to a
/// pid the system may have reused.
fn reap_if_exited(running: &mut Option<Child>) {
    if running.as_mut().is_some_and(process::has_exited) {
        *running = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_install_it() {
        let message = spawn_failure_message(BINARY, &io::Error::from(io::ErrorKind::NotFound));
        assert!(message.starts_with("redis-server not found"), "{message}");
        assert!(
            message.contains("apt-get install redis-server"),
            "{message}"
        );
        assert!(message.contains("scripts/test.sh"), "{message}");
        let valkey =
            spawn_failure_message(VALKEY_BINARY, &io::Error::from(io::ErrorKind::NotFound));
        assert!(valkey.starts_with("valkey-server not found"), "{valkey}");
        let other =
            spawn_failure_message(BINARY, &io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(other.starts_with("cannot start redis-server"), "{other}");
    }

    #[test]
    #[should_panic(expected = "cannot be \"default\"")]
    fn the_default_user_is_not_an_acl_user_of_the_options() {
        let _ = RedisOptions::new().user("default", "pw");
    }
}
