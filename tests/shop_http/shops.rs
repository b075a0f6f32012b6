//! The two shops, `shop` (axum) and `shop-actix` (actix-web), each served on a loopback
//! TCP port by its example's own `build` and `serve`, the code path of the binaries:
//! what the contract, mixed-run and security tests talk to.
//!
//! The test crates that include this file include the examples' modules as the
//! binaries do: `app`, `options`, and the wirings `shop_axum` and `shop_actix`.

#![allow(dead_code)]

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use tandem::manager::{ShutdownReport, Stats};
use tandem::memcached::MemcachedStore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::{Backend, Sessions};
use crate::options::Options;
use crate::{shop_actix, shop_axum};

/// Which example serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    /// `examples/shop.rs`.
    Axum,
    /// `examples/shop-actix.rs`.
    Actix,
}

impl fmt::Display for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Framework::Axum => "axum",
            Framework::Actix => "actix-web",
        })
    }
}

/// The remote tier of a shop under test.
#[derive(Clone)]
pub enum Remote {
    /// A store the test connected (and may count operations on).
    Memcached(Arc<MemcachedStore>),
    /// What the command line names, connected as the binary does (`Backend::connect`).
    FromOptions,
}

/// One shop serving on a loopback port. Dropping it stops serving at once; [`stop`]
/// stops it as SIGTERM stops the binary.
///
/// [`stop`]: Served::stop
pub struct Served {
    pub framework: Framework,
    pub address: SocketAddr,
    sessions: Arc<dyn Sessions>,
    signal: Option<oneshot::Sender<()>>,
    serving: JoinHandle<Result<(), String>>,
}

impl Served {
    /// Serves the shop of `args` (its command line; `--listen` is added: a free port)
    /// over `remote`. `Err` if the shop does not start: a bad command line, or a remote
    /// tier that refuses it.
    pub async fn start(
        framework: Framework,
        args: &[&str],
        remote: Remote,
    ) -> Result<Served, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| error.to_string())?;
        listener
            .set_nonblocking(true)
            .map_err(|error| error.to_string())?;
        let address = listener.local_addr().map_err(|error| error.to_string())?;
        let listen = address.to_string();
        let mut args = args.to_vec();
        args.extend(["--listen", listen.as_str()]);
        let (signal, signalled) = oneshot::channel::<()>();
        // Only `stop` signals; dropping the sender (dropping `Served`) aborts instead.
        let stop_signal = async move {
            if signalled.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let options =
            Options::parse(args.iter().map(|arg| arg.to_string()))?.ok_or("--help is no shop")?;
        let backend = match remote {
            Remote::Memcached(store) => Backend::Memcached(store),
            Remote::FromOptions => Backend::connect(&options).await?,
        };
        // Each wiring's own `build` and `serve`, as its binary calls them.
        let (sessions, serving) = match framework {
            Framework::Axum => {
                let shop = shop_axum::build(&options, backend)?;
                let sessions = Arc::clone(&shop.sessions);
                (
                    sessions,
                    tokio::spawn(shop_axum::serve(shop, listener, stop_signal)),
                )
            }
            Framework::Actix => {
                let shop = shop_actix::build(&options, backend)?;
                let sessions = Arc::clone(&shop.sessions);
                (
                    sessions,
                    tokio::spawn(shop_actix::serve(shop, listener, stop_signal)),
                )
            }
        };
        Ok(Served {
            framework,
            address,
            sessions,
            signal: Some(signal),
            serving,
        })
    }

    /// [`start`](Self::start) that must succeed.
    pub async fn over(framework: Framework, args: &[&str], remote: Remote) -> Served {
        match Served::start(framework, args, remote).await {
            Ok(served) => served,
            Err(error) => panic!("{framework} shop with {args:?} does not start: {error}"),
        }
    }

    /// The manager's counters.
    pub fn stats(&self) -> Stats {
        self.sessions.stats()
    }

    /// Backups not written yet.
    pub fn pending_backups(&self) -> usize {
        self.sessions.pending_backups()
    }

    /// Flushes the manager's pending backups (what a restart does first).
    pub async fn flush(&self, deadline: Duration) -> ShutdownReport {
        self.sessions.shutdown(deadline).await
    }

    /// Stops as the binary does on SIGTERM: flush, stop accepting, let running
    /// requests finish; panics if serving ended with an error.
    pub async fn stop(mut self) {
        if let Some(signal) = self.signal.take() {
            let _ = signal.send(());
        }
        let framework = self.framework;
        match tokio::time::timeout(Duration::from_secs(20), &mut self.serving).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => panic!("{framework} shop: serving failed: {error}"),
            Ok(Err(error)) => panic!("{framework} shop: serving panicked: {error}"),
            Err(_) => panic!("{framework} shop did not stop within 20 s"),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.serving.abort();
    }
}
