//! [`RedisServers`]: independent standalone servers, one Tandem node each.

use super::*;

/// Several independent standalone [`RedisProcess`]es with the same options, named
/// `r1`, `r2`, ... in start order. TLS servers share one set of [`TlsFiles`], so a
/// client trusts all of them with one CA.
///
/// ```no_run
/// use tandem_testkit::RedisServers;
///
/// let servers = RedisServers::start(2);
/// let spec = servers.node_spec(); // "r1=redis://127.0.0.1:PORT1,r2=redis://127.0.0.1:PORT2"
/// servers.node("r2").pause(); // r2 now hangs every request
/// servers.node("r2").resume();
/// # let _ = spec;
/// ```
#[derive(Debug)]
pub struct RedisServers {
    processes: Vec<RedisProcess>,
}

impl RedisServers {
    /// Starts `count` plain-text servers, each on its own free port.
    ///
    /// # Panics
    ///
    /// As [`start_with`](Self::start_with).
    pub fn start(count: usize) -> RedisServers {
        RedisServers::start_with(count, RedisOptions::default())
    }

    /// Starts `count` servers configured by `options`, each on its own free port.
    ///
    /// # Panics
    ///
    /// If `count` is zero or a server cannot be started (see
    /// [`RedisProcess::start_with`]).
    pub fn start_with(count: usize, options: RedisOptions) -> RedisServers {
        assert!(count > 0, "RedisServers needs at least one server");
        let tls = options.is_tls().then(TlsMaterial::generate);
        RedisServers {
            processes: (0..count)
                .map(|_| RedisProcess::start_sharing(options.clone(), tls.clone()))
                .collect(),
        }
    }

    /// The node spec: `r1=URL1,r2=URL2,...`, each URL as [`RedisProcess::url`] has it.
    pub fn node_spec(&self) -> String {
        self.processes
            .iter()
            .enumerate()
            .map(|(index, process)| format!("r{}={}", index + 1, process.url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node ids, `r1` to `rN`.
    pub fn ids(&self) -> Vec<String> {
        (1..=self.processes.len())
            .map(|number| format!("r{number}"))
            .collect()
    }

    /// The process of node `id` (`"r1"` is the first).
    ///
    /// # Panics
    ///
    /// If there is no node `id`.
    pub fn node(&self, id: &str) -> &RedisProcess {
        id.strip_prefix('r')
            .and_then(|number| number.parse::<usize>().ok())
            .and_then(|number| number.checked_sub(1))
            .and_then(|index| self.processes.get(index))
            .unwrap_or_else(|| {
                panic!(
                    "the Redis servers have no node {id:?}; their nodes are {:?}",
                    self.ids()
                )
            })
    }

    /// All processes, `r1` first.
    pub fn processes(&self) -> &[RedisProcess] {
        &self.processes
    }

    /// The TLS files all the servers share; `None` for plain-text servers.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.processes[0].tls_files()
    }

    /// The number of servers.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Always `false`: there is at least one server.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }
}
