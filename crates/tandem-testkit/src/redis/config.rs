//! A server's configuration file, from its options and its place in a deployment.

use super::*;

/// What a server is in a replicated deployment; written into its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Topology {
    /// A standalone server (or the first master of a Sentinel group).
    Standalone,
    /// A replica of the server on `master_port` (`replicaof`).
    Replica { master_port: u16 },
    /// A Sentinel monitoring the master on `master_port` as `service`, with the
    /// credentials of the data servers, if any (`sentinel auth-user`/`auth-pass`).
    Sentinel {
        service: String,
        master_port: u16,
        quorum: usize,
        auth: Option<(Option<String>, String)>,
    },
    /// A cluster-enabled server whose cluster bus listens on `bus_port`.
    ClusterNode { bus_port: u16 },
}

/// The configuration file of a server in `dir` listening on `port`.
pub(super) fn config_text(
    dir: &Path,
    port: u16,
    options: &RedisOptions,
    tls: Option<&TlsMaterial>,
) -> String {
    let path = |name: &str| quoted(&dir.join(name).to_string_lossy());
    let mut config = String::from("# Written by tandem-testkit for one test server.\n");
    let mut line = |text: String| {
        config.push_str(&text);
        config.push('\n');
    };
    line("bind 127.0.0.1".to_owned());
    match tls {
        None => line(format!("port {port}")),
        Some(_) => {
            line("port 0".to_owned());
            line(format!("tls-port {port}"));
        }
    }
    line(format!("unixsocket {}", path(SOCKET_FILE)));
    line("unixsocketperm 700".to_owned());
    line("daemonize no".to_owned());
    line("supervised no".to_owned());
    // Everything the server prints goes to standard output, which is the log file.
    line("logfile \"\"".to_owned());
    line("always-show-logo no".to_owned());
    line(format!("dir {}", quoted(&dir.to_string_lossy())));
    line(format!("dbfilename {SNAPSHOT_FILE}"));
    // Snapshots only when a test asks for one, even with persistence.
    line("save \"\"".to_owned());
    line("appendonly no".to_owned());
    line("enable-debug-command local".to_owned());
    if let Some(password) = &options.password {
        line(format!("requirepass {}", quoted(password)));
    }
    if let Some((name, password)) = &options.user {
        if options.password.is_none() {
            line("user default off".to_owned());
        }
        line(format!(
            "user {} on {} ~* &* +@all",
            quoted(name),
            quoted(&format!(">{password}"))
        ));
    }
    // A replica (or a master the Sentinels turn into one) logs in to its master.
    match (&options.user, &options.password) {
        (Some((name, password)), _) => {
            line(format!("masteruser {}", quoted(name)));
            line(format!("masterauth {}", quoted(password)));
        }
        (None, Some(password)) => line(format!("masterauth {}", quoted(password))),
        (None, None) => {}
    }
    if let Some(tls) = tls {
        line(format!(
            "tls-cert-file {}",
            quoted(&tls.server_cert().to_string_lossy())
        ));
        line(format!(
            "tls-key-file {}",
            quoted(&tls.server_key().to_string_lossy())
        ));
        line(format!(
            "tls-ca-cert-file {}",
            quoted(&tls.files().ca_cert.to_string_lossy())
        ));
        // Outgoing connections (to a master, to a cluster peer, from a Sentinel)
        // speak TLS too, and present the client certificate.
        line("tls-replication yes".to_owned());
        line("tls-cluster yes".to_owned());
        line(format!(
            "tls-client-cert-file {}",
            quoted(&tls.files().client_cert.to_string_lossy())
        ));
        line(format!(
            "tls-client-key-file {}",
            quoted(&tls.files().client_key.to_string_lossy())
        ));
        let client_auth = options.tls == Tls::ClientAuth;
        line(format!(
            "tls-auth-clients {}",
            if client_auth { "yes" } else { "no" }
        ));
    }
    config
}

/// The configuration lines of a member of a replicated deployment, with short timers
/// so that a test sees a failure handled within a few seconds.
pub(super) fn topology_text(topology: &Topology) -> String {
    // A replica loads the master's data over the socket at once, without waiting
    // for more replicas to join the transfer.
    let sync = "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n";
    match topology {
        Topology::Standalone => sync.to_owned(),
        Topology::Replica { master_port } => {
            format!("{sync}replicaof 127.0.0.1 {master_port}\n")
        }
        Topology::Sentinel {
            service,
            master_port,
            quorum,
            auth,
        } => {
            let mut text = format!(
                "sentinel monitor {service} 127.0.0.1 {master_port} {quorum}\n\
                 sentinel down-after-milliseconds {service} {SENTINEL_DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {service} {SENTINEL_FAILOVER_TIMEOUT_MS}\n\
                 sentinel parallel-syncs {service} 16\n"
            );
            if let Some((user, password)) = auth {
                if let Some(user) = user {
                    let _ = writeln!(text, "sentinel auth-user {service} {}", quoted(user));
                }
                let _ = writeln!(text, "sentinel auth-pass {service} {}", quoted(password));
            }
            text
        }
        Topology::ClusterNode { bus_port } => format!(
            "{sync}cluster-enabled yes\n\
             cluster-config-file {CLUSTER_CONFIG_FILE}\n\
             cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}\n\
             cluster-port {bus_port}\n\
             cluster-replica-validity-factor 0\n"
        ),
    }
}

/// How long a master may not answer before a Sentinel thinks it down.
pub(super) const SENTINEL_DOWN_AFTER_MS: u64 = 1000;
/// A Sentinel's bound on one failover, and its wait before trying another.
pub(super) const SENTINEL_FAILOVER_TIMEOUT_MS: u64 = 3000;
/// How long a cluster node may not answer before the others think it failing.
pub(super) const CLUSTER_NODE_TIMEOUT_MS: u64 = 1000;

/// `text` as a double-quoted configuration argument: `\`, `"` and every byte that is
/// not printable ASCII escaped.
pub(super) fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for &byte in text.as_bytes() {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b' '..=b'~' => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out.push('"');
    out
}

/// The user-information part of a URL for the credentials of `options`:
/// `:password@`, `user:password@` (percent-encoded), or nothing.
pub(super) fn url_credentials(options: &RedisOptions) -> String {
    match (&options.user, &options.password) {
        (Some((name, password)), _) => {
            format!("{}:{}@", percent_encoded(name), percent_encoded(password))
        }
        (None, Some(password)) => format!(":{}@", percent_encoded(password)),
        (None, None) => String::new(),
    }
}

/// `text` percent-encoded for the user-information part of a URL: everything but
/// the unreserved characters escaped.
pub(super) fn percent_encoded(text: &str) -> String {
    let mut out = String::new();
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn configuration_arguments_are_quoted() {
        assert_eq!(quoted("plain"), "\"plain\"");
        assert_eq!(quoted("a \"b\" \\c"), "\"a \\\"b\\\" \\\\c\"");
        assert_eq!(quoted("new\nline é"), "\"new\\x0aline \\xc3\\xa9\"");
    }

    #[test]
    fn url_credentials_are_percent_encoded() {
        assert_eq!(percent_encoded("Plain-1._~"), "Plain-1._~");
        assert_eq!(percent_encoded("p@ss:w/rd %"), "p%40ss%3Aw%2Frd%20%25");
        assert_eq!(percent_encoded("é"), "%C3%A9");
    }

    #[test]
    fn the_configuration_follows_the_options() {
        let dir = Path::new("server-dir");
        let plain = config_text(dir, 7000, &RedisOptions::default(), None);
        assert!(plain.contains("\nport 7000\n"), "{plain}");
        assert!(plain.contains("\nsave \"\"\n"), "{plain}");
        assert!(
            !plain.contains("requirepass") && !plain.contains("user "),
            "{plain}"
        );

        let password = config_text(dir, 7000, &RedisOptions::new().password("pw"), None);
        assert!(password.contains("\nrequirepass \"pw\"\n"), "{password}");

        let user = config_text(dir, 7000, &RedisOptions::new().user("u", "pw"), None);
        assert!(user.contains("\nuser default off\n"), "{user}");
        assert!(
            user.contains("\nuser \"u\" on \">pw\" ~* &* +@all\n"),
            "{user}"
        );

        assert!(
            password.contains("\nmasterauth \"pw\"\n") && !password.contains("masteruser"),
            "{password}"
        );
        assert!(
            user.contains("\nmasteruser \"u\"\nmasterauth \"pw\"\n"),
            "{user}"
        );

        let both = RedisOptions::new().user("u", "pw").password("other");
        let both = config_text(dir, 7000, &both, None);
        assert!(!both.contains("user default off"), "{both}");
        assert!(both.contains("\nrequirepass \"other\"\n"), "{both}");
    }

    #[test]
    fn members_of_replicated_deployments_are_configured_for_their_role() {
        let replica = topology_text(&Topology::Replica { master_port: 7000 });
        assert!(
            replica.contains("\nreplicaof 127.0.0.1 7000\n"),
            "{replica}"
        );
        let sentinel = topology_text(&Topology::Sentinel {
            service: "tandem".to_owned(),
            master_port: 7000,
            quorum: 2,
            auth: None,
        });
        assert!(
            sentinel.starts_with("sentinel monitor tandem 127.0.0.1 7000 2\n"),
            "{sentinel}"
        );
        assert!(
            sentinel.contains("\nsentinel down-after-milliseconds tandem 1000\n"),
            "{sentinel}"
        );
        let with_auth = topology_text(&Topology::Sentinel {
            service: "tandem".to_owned(),
            master_port: 7000,
            quorum: 1,
            auth: Some((Some("u".to_owned()), "p w".to_owned())),
        });
        assert!(
            with_auth.ends_with(
                "\nsentinel auth-user tandem \"u\"\nsentinel auth-pass tandem \"p w\"\n"
            ),
            "{with_auth}"
        );
        let node = topology_text(&Topology::ClusterNode { bus_port: 17000 });
        assert!(node.contains("\ncluster-enabled yes\n"), "{node}");
        assert!(node.contains("\ncluster-port 17000\n"), "{node}");
        assert!(
            node.contains("\ncluster-config-file nodes.conf\n"),
            "{node}"
        );
    }
}
