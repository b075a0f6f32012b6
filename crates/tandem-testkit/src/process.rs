//! What every server process of the kit shares, whatever the server: free ports,
//! signals, reaping, and the private temporary directory a process runs in.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// How long a signalled process may take to reach the stopped or running state.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two polls of a condition.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A loopback port that was free a moment ago. Another process may take it before
/// the server binds it; the callers detect that and retry with a fresh port.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|error| panic!("cannot bind a free loopback port: {error}"));
    listener
        .local_addr()
        .unwrap_or_else(|error| panic!("cannot read the bound port: {error}"))
        .port()
}

/// Whether `child` has exited; reaps it if so, so that no signal is ever sent to a
/// pid the system may have reused.
pub(crate) fn has_exited(child: &mut Child) -> bool {
    !matches!(child.try_wait(), Ok(None))
}

/// Continues (in case it is paused), kills and reaps `child`.
pub(crate) fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = send_signal(child.id(), Signal::SIGCONT);
        let _ = child.kill();
    }
    let _ = child.wait();
}

pub(crate) fn send_signal(pid: u32, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| nix::Error::ESRCH)?;
    signal::kill(Pid::from_raw(pid), signal)
}

/// Waits until every thread of `pid` (a `what`, for the panic message) is stopped
/// (or none is). A signal is delivered asynchronously; without the wait a request
/// sent right after a pause could still be served by a thread that has not stopped
/// yet.
#[cfg(target_os = "linux")]
pub(crate) fn wait_for_stopped(what: &str, pid: u32, stopped: bool) {
    let deadline = Instant::now() + SIGNAL_TIMEOUT;
    loop {
        match all_threads_stopped(pid) {
            Ok(state) if state == stopped => return,
            Ok(_) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            Ok(_) => panic!(
                "{what} (pid {pid}) did not {} within {SIGNAL_TIMEOUT:?}",
                if stopped { "stop" } else { "continue" }
            ),
            Err(error) => panic!("cannot read the state of {what} (pid {pid}): {error}"),
        }
    }
}

/// Without `/proc` there is nothing to poll; the signal is sent and that is all.
#[cfg(not(target_os = "linux"))]
pub(crate) fn wait_for_stopped(_what: &str, _pid: u32, _stopped: bool) {}

#[cfg(target_os = "linux")]
fn all_threads_stopped(pid: u32) -> io::Result<bool> {
    let mut all_stopped = true;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("stat"))?;
        // `pid (command) S ...`: the command may contain anything, so the state is the
        // first field after the last `)`.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable stat"))?;
        all_stopped &= state == 'T';
    }
    Ok(all_stopped)
}

/// A directory of its own under the system's temporary directory, readable by its
/// owner only, removed with everything in it when dropped.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<temp>/tandem-<purpose>-<pid>-<n>` (a fresh name if it exists).
    ///
    /// # Panics
    ///
    /// If no directory can be created.
    pub(crate) fn new(purpose: &str) -> TempDir {
        static CREATED: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let mut last_error = None;
        for _ in 0..10 {
            // The clock keeps two test binaries with the same pid (in two containers,
            // for example) apart.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.subsec_nanos());
            let name = format!(
                "tandem-{purpose}-{}-{}-{nanos:08x}",
                std::process::id(),
                CREATED.fetch_add(1, Ordering::Relaxed)
            );
            let path = base.join(name);
            match create_private_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(error) => last_error = Some(error),
            }
        }
        panic!(
            "cannot create a temporary directory in {}: {}",
            base.display(),
            last_error.map_or_else(String::new, |error| error.to_string())
        );
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// Writes `contents` to `path`, readable by its owner only (for private keys).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents)
}
