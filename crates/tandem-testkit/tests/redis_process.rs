//! The kit against the real redis-server binary: every fault it injects, every
//! option it sets, must be real. Plain-text servers are spoken to in raw RESP over
//! TCP; TLS servers through `redis-cli --tls` (installed with redis-server) and, for
//! the certificate's names, `openssl s_client`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tandem_testkit::{RedisOptions, RedisProcess, RedisReply, RedisServers, untrusted_ca};

const WAIT: Duration = Duration::from_secs(1);

/// `args` as a RESP command.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Sends one command and reads one reply (a simple string, error, integer or bulk
/// string, as text with its type marker: `+PONG`, `-NOAUTH ...`, `:1`, `$v`, `$nil`),
/// waiting at most `wait`.
fn request(stream: &mut TcpStream, args: &[&str], wait: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(wait))?;
    stream.write_all(&encode(args))?;
    read_reply(stream)
}

fn read_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_owned())
}

fn read_reply(stream: &mut TcpStream) -> std::io::Result<String> {
    let line = read_line(stream)?;
    match line.strip_prefix('$') {
        Some("-1") => Ok("$nil".to_owned()),
        Some(_) => Ok(format!("${}", read_line(stream)?)),
        None => Ok(line),
    }
}

fn connect(redis: &RedisProcess) -> TcpStream {
    TcpStream::connect(redis.addr()).unwrap()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs `redis-cli` with `args` and returns whether it succeeded, and what it
/// printed (both streams).
fn redis_cli(args: &[&str]) -> (bool, String) {
    let output = Command::new("redis-cli")
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run redis-cli ({error}); it comes with redis-server (Debian: redis-tools)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `redis-cli --tls`, trusting `ca`, with `extra` arguments: `PING` to `redis`.
fn tls_ping(redis: &RedisProcess, ca: &Path, extra: &[&str]) -> (bool, String) {
    let port = redis.port().to_string();
    let mut args = vec!["--tls", "--cacert", ca.to_str().unwrap()];
    args.extend_from_slice(&["-h", "127.0.0.1", "-p", &port]);
    args.extend_from_slice(extra);
    args.push("PING");
    redis_cli(&args)
}

#[test]
fn starts_a_private_server_that_answers() {
    let redis = RedisProcess::start();
    assert!(redis.is_running());
    assert_eq!(redis.addr().ip().to_string(), "127.0.0.1");
    assert_eq!(redis.address(), format!("127.0.0.1:{}", redis.port()));
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert!(redis.tls_files().is_none());
    assert!(redis.dir().join("redis.conf").is_file());

    let mut stream = connect(&redis);
    assert_eq!(request(&mut stream, &["PING"], WAIT).unwrap(), "+PONG");
    assert_eq!(
        request(&mut stream, &["SET", "k", "v"], WAIT).unwrap(),
        "+OK"
    );
    assert_eq!(request(&mut stream, &["GET", "k"], WAIT).unwrap(), "$v");
    assert_eq!(
        request(&mut stream, &["GET", "nope"], WAIT).unwrap(),
        "$nil"
    );

    // The kit sees what the client wrote, and the process it started is the one
    // answering on the port.
    assert_eq!(redis.command(&["DBSIZE"]), RedisReply::Integer(1));
    assert_eq!(redis.keys(), ["k"]);
    let info = redis.command(&["INFO", "server"]);
    let pid = redis.pid().unwrap();
    assert!(
        info.as_str()
            .unwrap()
            .contains(&format!("process_id:{pid}\r\n")),
        "{info:?}"
    );
    assert!(redis.log().contains("Ready to accept connections"));
}

#[test]
fn valkey_runs_in_place_of_redis() {
    let options = RedisOptions::default().valkey().password("pw");
    assert_eq!(options.binary(), "valkey-server");
    assert_eq!(RedisOptions::default().binary(), "redis-server");
    let valkey = RedisProcess::start_with(options);
    assert_eq!(
        valkey.command(&["SET", "k", "v"]),
        RedisReply::Status("OK".into())
    );
    let info = valkey.command(&["INFO", "server"]);
    let info = info.as_str().unwrap();
    assert!(info.contains("valkey_version:"), "{info}");
    assert!(info.contains(&format!("process_id:{}\r\n", valkey.pid().unwrap())));
    valkey.pause();
    valkey.resume();
    valkey.restart();
    assert_eq!(valkey.keys(), Vec::<String>::new(), "restarted empty");
}

#[test]
fn command_returns_error_replies_and_remaining_ttl_reads_the_ttl() {
    let redis = RedisProcess::start();
    assert!(matches!(
        redis.command(&["NO-SUCH-COMMAND"]),
        RedisReply::Error(error) if error.starts_with("ERR unknown command")
    ));
    assert_eq!(
        redis.command(&["SET", "forever", "x"]),
        RedisReply::Status("OK".into())
    );
    redis.command(&["SET", "minute", "x", "EX", "60"]);
    assert_eq!(
        redis.command(&["GET", "forever"]),
        RedisReply::Bulk(b"x".to_vec())
    );
    assert_eq!(redis.command(&["GET", "missing"]), RedisReply::Nil);
    assert_eq!(redis.remaining_ttl("forever"), Some(-1));
    let minute = redis.remaining_ttl("minute").unwrap();
    assert!((55..=60).contains(&minute), "{minute} s");
    assert_eq!(redis.remaining_ttl("missing"), None);
    assert_eq!(redis.keys(), ["forever", "minute"]);
}

#[test]
fn a_password_is_required() {
    let redis = RedisProcess::start_with(RedisOptions::default().password("s3cret"));
    assert_eq!(
        redis.url(),
        format!("redis://:s3cret@127.0.0.1:{}", redis.port())
    );
    let mut stream = connect(&redis);
    let refused = request(&mut stream, &["PING"], WAIT).unwrap();
    assert!(refused.starts_with("-NOAUTH"), "{refused}");
    let wrong = request(&mut stream, &["AUTH", "guess"], WAIT).unwrap();
    assert!(wrong.starts_with("-WRONGPASS"), "{wrong}");
    assert_eq!(
        request(&mut stream, &["AUTH", "s3cret"], WAIT).unwrap(),
        "+OK"
    );
    assert_eq!(request(&mut stream, &["PING"], WAIT).unwrap(), "+PONG");
    // The kit authenticates itself.
    assert_eq!(redis.command(&["PING"]), RedisReply::Status("PONG".into()));
}

#[test]
fn only_the_acl_user_works() {
    let redis = RedisProcess::start_with(RedisOptions::default().user("tandem", "p@ss:w rd"));
    assert_eq!(
        redis.url(),
        format!("redis://tandem:p%40ss%3Aw%20rd@127.0.0.1:{}", redis.port())
    );
    let mut stream = connect(&redis);
    let refused = request(&mut stream, &["PING"], WAIT).unwrap();
    assert!(refused.starts_with("-NOAUTH"), "{refused}");
    // The default user is off, whatever the password.
    for default_user in [
        &["AUTH", "p@ss:w rd"][..],
        &["AUTH", "default", "p@ss:w rd"],
    ] {
        let refused = request(&mut stream, default_user, WAIT).unwrap();
        assert!(refused.starts_with("-WRONGPASS"), "{refused}");
    }
    let wrong = request(&mut stream, &["AUTH", "tandem", "guess"], WAIT).unwrap();
    assert!(wrong.starts_with("-WRONGPASS"), "{wrong}");
    let auth = ["AUTH", "tandem", "p@ss:w rd"];
    assert_eq!(request(&mut stream, &auth, WAIT).unwrap(), "+OK");
    assert_eq!(
        request(&mut stream, &["SET", "k", "v"], WAIT).unwrap(),
        "+OK"
    );
    assert_eq!(request(&mut stream, &["GET", "k"], WAIT).unwrap(), "$v");
    assert_eq!(
        request(&mut stream, &["ACL", "WHOAMI"], WAIT).unwrap(),
        "$tandem"
    );
    assert_eq!(redis.keys(), ["k"]);
}

#[test]
fn a_password_and_a_user_both_work() {
    let options = RedisOptions::default()
        .user("tandem", "pw")
        .password("other");
    let redis = RedisProcess::start_with(options);
    assert_eq!(
        redis.url(),
        format!("redis://tandem:pw@127.0.0.1:{}", redis.port())
    );
    let mut stream = connect(&redis);
    assert_eq!(
        request(&mut stream, &["AUTH", "other"], WAIT).unwrap(),
        "+OK"
    );
    let auth = ["AUTH", "tandem", "pw"];
    assert_eq!(request(&mut stream, &auth, WAIT).unwrap(), "+OK");
}

#[test]
fn pause_hangs_requests_until_resume() {
    let redis = RedisProcess::start();
    let mut stream = connect(&redis);
    redis.pause();
    assert!(redis.is_running(), "a paused process is still running");

    let started = Instant::now();
    let error = request(&mut stream, &["PING"], Duration::from_millis(300)).unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{error:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // New connections are accepted by the kernel but not served either.
    let mut fresh = connect(&redis);
    assert!(request(&mut fresh, &["PING"], Duration::from_millis(100)).is_err());

    redis.resume();
    // The request sent while paused is answered now, and the connection goes on.
    stream.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_reply(&mut stream).unwrap(), "+PONG");
    assert_eq!(request(&mut stream, &["PING"], WAIT).unwrap(), "+PONG");
}

#[test]
#[should_panic(expected = "on redis-server 127.0.0.1:")]
fn a_command_on_a_paused_server_is_a_clear_panic() {
    let redis = RedisProcess::start();
    redis.pause();
    redis.command(&["PING"]);
}

#[test]
fn kill_closes_the_port() {
    let redis = RedisProcess::start();
    let pid = redis.pid().unwrap();
    redis.kill();
    assert!(!redis.is_running());
    assert_eq!(redis.pid(), None);
    assert!(!process_exists(pid), "the killed process was reaped");
    let error = TcpStream::connect(redis.addr()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused);
    redis.kill(); // killing twice is harmless
}

#[test]
fn kill_works_on_a_paused_process() {
    let redis = RedisProcess::start();
    redis.pause();
    redis.kill();
    assert!(!redis.is_running());
    assert!(TcpStream::connect(redis.addr()).is_err());
}

#[test]
fn restart_without_persistence_is_empty_on_the_same_port() {
    let redis = RedisProcess::start();
    let (port, old_pid) = (redis.port(), redis.pid().unwrap());
    let mut stream = connect(&redis);
    assert_eq!(
        request(&mut stream, &["SET", "k", "v"], WAIT).unwrap(),
        "+OK"
    );
    // Even a snapshot written behind the kit's back is not loaded.
    assert_eq!(redis.command(&["SAVE"]), RedisReply::Status("OK".into()));

    redis.restart();
    assert_eq!(redis.port(), port);
    let new_pid = redis.pid().unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(!process_exists(old_pid));
    let mut stream = connect(&redis);
    assert_eq!(request(&mut stream, &["GET", "k"], WAIT).unwrap(), "$nil");
    assert!(redis.keys().is_empty());

    // From a killed state, and from another thread than the one that started it.
    redis.kill();
    let redis = Arc::new(redis);
    let helper = Arc::clone(&redis);
    thread::spawn(move || helper.restart()).join().unwrap();
    assert!(redis.is_running());
    assert_eq!(redis.port(), port);
}

#[test]
fn restart_with_persistence_loads_the_last_save() {
    let redis = RedisProcess::start_with(RedisOptions::default().persistence());
    let mut stream = connect(&redis);
    let set = ["SET", "saved", "v", "EX", "100"];
    assert_eq!(request(&mut stream, &set, WAIT).unwrap(), "+OK");
    redis.save();
    assert!(redis.dir().join("dump.rdb").is_file());
    let unsaved = ["SET", "unsaved", "v"];
    assert_eq!(request(&mut stream, &unsaved, WAIT).unwrap(), "+OK");

    redis.restart(); // SIGKILL: what came after the snapshot is lost
    let mut stream = connect(&redis);
    assert_eq!(request(&mut stream, &["GET", "saved"], WAIT).unwrap(), "$v");
    assert_eq!(
        request(&mut stream, &["GET", "unsaved"], WAIT).unwrap(),
        "$nil"
    );
    let ttl = redis.remaining_ttl("saved").unwrap();
    assert!((90..=100).contains(&ttl), "{ttl} s");
    assert!(redis.log().contains("DB loaded from disk"));

    // A restart without a new save loads the same snapshot again.
    redis.command(&["DEL", "saved"]);
    redis.kill();
    redis.restart();
    assert_eq!(redis.keys(), ["saved"]);
}

#[test]
#[should_panic(expected = "started without RedisOptions::persistence()")]
fn save_without_persistence_is_a_clear_panic() {
    RedisProcess::start().save();
}

#[test]
fn restart_works_on_a_paused_process() {
    let redis = RedisProcess::start_with(RedisOptions::default().password("pw"));
    redis.pause();
    redis.restart();
    assert_eq!(redis.command(&["PING"]), RedisReply::Status("PONG".into()));
}

#[test]
fn drop_kills_and_reaps_even_a_paused_process_and_removes_its_directory() {
    let running = RedisProcess::start();
    let paused = RedisProcess::start_with(RedisOptions::default().tls());
    paused.pause();
    let pids = [running.pid().unwrap(), paused.pid().unwrap()];
    let dirs = [running.dir().to_owned(), paused.dir().to_owned()];
    let ca = paused.tls_files().unwrap().ca_cert.clone();
    drop(running);
    drop(paused);
    for pid in pids {
        assert!(!process_exists(pid), "pid {pid} is still there");
    }
    for dir in dirs.iter().chain([&ca]) {
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
}

#[test]
fn drop_cleans_up_after_a_panicking_test() {
    let outcome = std::panic::catch_unwind(|| {
        let redis = RedisProcess::start();
        redis.pause();
        std::panic::panic_any(redis.pid().unwrap());
    });
    let pid = *outcome.unwrap_err().downcast::<u32>().unwrap();
    assert!(!process_exists(pid));
}

#[test]
#[should_panic(expected = "cannot pause redis-server")]
fn pausing_a_killed_process_is_a_clear_panic() {
    let redis = RedisProcess::start();
    redis.kill();
    redis.pause();
}

#[test]
fn a_server_that_cannot_start_panics_with_its_log() {
    // Redis refuses a user name with a space in it.
    let outcome = std::panic::catch_unwind(|| {
        RedisProcess::start_with(RedisOptions::default().user("two words", "pw"))
    });
    let message = *outcome.unwrap_err().downcast::<String>().unwrap();
    assert!(
        message.starts_with("could not start redis-server in 5 attempts"),
        "{message}"
    );
    assert!(message.contains("the end of its log"), "{message}");
    assert!(
        message.contains("Spaces not allowed in ACL usernames"),
        "{message}"
    );
}

#[test]
fn a_tls_server_refuses_plain_text() {
    let redis = RedisProcess::start_with(RedisOptions::default().tls());
    assert_eq!(redis.url(), format!("rediss://127.0.0.1:{}", redis.port()));
    // TLS only: the port is the TLS port and there is no plain-text one.
    let config = |name: &str| match redis.command(&["CONFIG", "GET", name]) {
        RedisReply::Array(pair) => pair[1].as_str().unwrap().to_owned(),
        other => panic!("{other:?}"),
    };
    assert_eq!(config("tls-port"), redis.port().to_string());
    assert_eq!(config("port"), "0");
    assert_eq!(config("tls-auth-clients"), "no");

    let mut stream = connect(&redis);
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream.write_all(&encode(&["PING"])).unwrap();
    let mut answer = Vec::new();
    let ending = stream.read_to_end(&mut answer);
    // Closed (or reset) by the server, not left hanging, and never a PONG.
    if let Err(error) = &ending {
        assert!(
            !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "the server neither answered nor closed the connection: {error:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        !String::from_utf8_lossy(&answer).contains("PONG"),
        "{answer:?}"
    );
}

#[test]
fn tls_files_are_pem_and_a_client_that_trusts_the_ca_gets_through() {
    let redis = RedisProcess::start_with(RedisOptions::default().tls().password("pw"));
    assert_eq!(
        redis.url(),
        format!("rediss://:pw@127.0.0.1:{}", redis.port())
    );
    let files = redis.tls_files().unwrap();
    for (path, label) in [
        (&files.ca_cert, "CERTIFICATE"),
        (&files.client_cert, "CERTIFICATE"),
        (&files.client_key, "PRIVATE KEY"),
    ] {
        let pem = std::fs::read_to_string(path).unwrap();
        assert!(
            pem.starts_with(&format!("-----BEGIN {label}-----\n")),
            "{pem}"
        );
        assert!(
            pem.trim_end().ends_with(&format!("-----END {label}-----")),
            "{pem}"
        );
    }

    let (ok, output) = tls_ping(&redis, &files.ca_cert, &["-a", "pw"]);
    assert!(ok && output.contains("PONG"), "{output}");
    // Without the password the handshake works and the command is refused.
    let (_, output) = tls_ping(&redis, &files.ca_cert, &[]);
    assert!(output.contains("NOAUTH"), "{output}");
}

#[test]
fn a_client_that_trusts_another_ca_refuses_the_server() {
    let redis = RedisProcess::start_with(RedisOptions::default().tls());
    let untrusted = untrusted_ca();
    let pem = std::fs::read_to_string(&untrusted).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert_ne!(
        pem,
        std::fs::read_to_string(&redis.tls_files().unwrap().ca_cert).unwrap()
    );
    assert_eq!(untrusted_ca(), untrusted, "one file per test binary");

    let (ok, output) = tls_ping(&redis, &untrusted, &[]);
    assert!(!ok, "{output}");
    assert!(output.contains("certificate verify failed"), "{output}");
    assert!(!output.contains("PONG"), "{output}");
}

#[test]
fn a_client_certificate_is_required_with_tls_client_auth() {
    let redis = RedisProcess::start_with(RedisOptions::default().tls_client_auth());
    assert!(redis.url().starts_with("rediss://"));
    let files = redis.tls_files().unwrap();
    let client_cert = files.client_cert.to_str().unwrap();
    let client_key = files.client_key.to_str().unwrap();

    let (ok, output) = tls_ping(&redis, &files.ca_cert, &[]);
    assert!(!(ok && output.contains("PONG")), "{output}");
    let (ok, output) = tls_ping(
        &redis,
        &files.ca_cert,
        &["--cert", client_cert, "--key", client_key],
    );
    assert!(ok && output.contains("PONG"), "{output}");

    // The same client certificate is welcome, unasked, on a server without
    // client authentication.
    let plain_tls = RedisProcess::start_with(RedisOptions::default().tls());
    let other = plain_tls.tls_files().unwrap();
    let (ok, output) = tls_ping(
        &plain_tls,
        &other.ca_cert,
        &[
            "--cert",
            other.client_cert.to_str().unwrap(),
            "--key",
            other.client_key.to_str().unwrap(),
        ],
    );
    assert!(ok && output.contains("PONG"), "{output}");
}

/// The names in the server certificate, as a client that checks them sees it.
#[test]
fn the_server_certificate_is_for_localhost_and_127_0_0_1() {
    let redis = RedisProcess::start_with(RedisOptions::default().tls());
    let ca = redis
        .tls_files()
        .unwrap()
        .ca_cert
        .to_str()
        .unwrap()
        .to_owned();
    let connect = redis.address();
    let s_client = |check: &[&str]| {
        let output = Command::new("openssl")
            .args(["s_client", "-connect", &connect, "-CAfile", &ca])
            .args(["-verify_return_error", "-brief"])
            .args(check)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run openssl ({error}); scripts/test.sh installs it")
            });
        let text = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        (output.status.success(), text)
    };
    for good in [
        &["-verify_ip", "127.0.0.1"][..],
        &["-verify_hostname", "localhost"],
    ] {
        let (ok, output) = s_client(good);
        assert!(
            ok && output.contains("Verification: OK"),
            "{good:?}: {output}"
        );
    }
    for bad in [
        &["-verify_ip", "127.0.0.2"][..],
        &["-verify_hostname", "example.com"],
    ] {
        let (ok, output) = s_client(bad);
        assert!(!ok && output.contains("mismatch"), "{bad:?}: {output}");
    }
}

#[test]
fn servers_are_named_in_order_and_give_their_node_spec() {
    let servers = RedisServers::start(3);
    assert_eq!(servers.len(), 3);
    assert!(!servers.is_empty());
    assert_eq!(servers.ids(), ["r1", "r2", "r3"]);
    assert!(servers.tls_files().is_none());
    let expected: Vec<String> = servers
        .processes()
        .iter()
        .enumerate()
        .map(|(index, process)| format!("r{}=redis://127.0.0.1:{}", index + 1, process.port()))
        .collect();
    assert_eq!(servers.node_spec(), expected.join(","));
    assert_eq!(servers.node("r2").port(), servers.processes()[1].port());

    let mut ports: Vec<u16> = servers.processes().iter().map(|p| p.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3);
    // Independent servers: a key written on one is not on the others.
    servers.node("r1").command(&["SET", "k", "v"]);
    assert_eq!(servers.node("r2").keys(), Vec::<String>::new());
    servers.node("r3").kill();
    assert!(servers.node("r1").is_running() && servers.node("r2").is_running());
    assert!(!servers.node("r3").is_running());
}

#[test]
fn tls_servers_share_one_ca() {
    let options = RedisOptions::default().tls().user("tandem", "pw");
    let servers = RedisServers::start_with(2, options);
    let ports: Vec<u16> = servers.processes().iter().map(|p| p.port()).collect();
    assert_eq!(
        servers.node_spec(),
        format!(
            "r1=rediss://tandem:pw@127.0.0.1:{},r2=rediss://tandem:pw@127.0.0.1:{}",
            ports[0], ports[1]
        )
    );
    let shared = servers.tls_files().unwrap();
    for process in servers.processes() {
        assert_eq!(process.tls_files(), Some(shared));
        let (ok, output) = tls_ping(
            process,
            &shared.ca_cert,
            &["--user", "tandem", "--pass", "pw"],
        );
        assert!(ok && output.contains("PONG"), "{output}");
    }
    // A restart keeps the certificates.
    servers.node("r2").restart();
    let (ok, output) = tls_ping(
        servers.node("r2"),
        &shared.ca_cert,
        &["--user", "tandem", "--pass", "pw"],
    );
    assert!(ok && output.contains("PONG"), "{output}");
}

#[test]
#[should_panic(expected = "the Redis servers have no node \"r4\"")]
fn an_unknown_node_is_a_clear_panic() {
    RedisServers::start(1).node("r4");
}
