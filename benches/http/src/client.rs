//! The benchmark's own HTTP clients (keep-alive HTTP/1.1 over hyper): creating the
//! live sessions before a wrk run, and the lost-update test, which needs an exact
//! request count that wrk (duration-bound) cannot give.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, COOKIE, HOST, SET_COOKIE};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One keep-alive connection to the app.
pub struct Connection {
    sender: SendRequest<String>,
    host: String,
}

/// A response as the clients need it.
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The first `Set-Cookie`'s `name=value`, if any.
    pub cookie: Option<String>,
    /// The body.
    pub body: String,
}

impl Connection {
    /// Opens a connection to `address`.
    pub async fn open(address: SocketAddr) -> Result<Connection, String> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|error| format!("connect {address}: {error}"))?;
        stream
            .set_nodelay(true)
            .map_err(|error| format!("nodelay: {error}"))?;
        let (sender, connection) = handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("handshake with {address}: {error}"))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes the connection;
            // a failure shows up in the next request.
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            host: address.to_string(),
        })
    }

    /// Sends one request without a body.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
    ) -> Result<Answer, String> {
        self.sender
            .ready()
            .await
            .map_err(|error| format!("connection lost: {error}"))?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.host)
            .header(CONTENT_LENGTH, "0");
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        let request = request
            .body(String::new())
            .map_err(|error| format!("request: {error}"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|error| format!("{path}: {error}"))?;
        let status = response.status();
        let cookie = response
            .headers()
            .get(SET_COOKIE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(|pair| pair.trim().to_owned());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("{path}: body: {error}"))?
            .to_bytes();
        Ok(Answer {
            status,
            cookie,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Creates `count` sessions over `connections` connections (`POST /session`) and
/// returns their cookies (`name=value`), in no particular order.
pub async fn populate(
    address: SocketAddr,
    count: usize,
    connections: usize,
) -> Result<Vec<String>, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(address).await?;
            let mut cookies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let answer = connection.send(Method::POST, "/session", None).await?;
                if answer.status != StatusCode::OK {
                    return Err(format!(
                        "POST /session answered {}: {}",
                        answer.status, answer.body
                    ));
                }
                cookies.push(answer.cookie.ok_or("POST /session set no cookie")?);
            }
            Ok::<_, String>(cookies)
        }));
    }
    let mut cookies = Vec::with_capacity(count);
    for task in tasks {
        cookies.extend(task.await.map_err(|error| error.to_string())??);
    }
    Ok(cookies)
}

/// What the lost-update test saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaceReport {
    /// Increments sent.
    pub sent: usize,
    /// Increments answered 200: the application was told they happened.
    pub accepted: usize,
    /// Increments answered 409 (a conflict the client can retry).
    pub conflicts: usize,
    /// Any other answer.
    pub errors: usize,
    /// The counter's value afterwards.
    pub final_value: u64,
    /// From the first increment sent to the last answered.
    pub elapsed: Duration,
    /// The 99th percentile of the increments' latencies.
    pub p99: Duration,
}

impl RaceReport {
    /// Increments answered per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Accepted increments missing from the final value.
    pub fn lost(&self) -> i64 {
        i64::try_from(self.accepted).unwrap_or(i64::MAX)
            - i64::try_from(self.final_value).unwrap_or(i64::MAX)
    }
}

/// `clients` concurrent connections each send `requests` increments (`POST
/// /counter`) of one session's counter; then the counter is read.
pub async fn race(
    address: SocketAddr,
    clients: usize,
    requests: usize,
) -> Result<RaceReport, String> {
    let mut setup = Connection::open(address).await?;
    let created = setup.send(Method::POST, "/session", None).await?;
    let cookie: Arc<str> = created.cookie.ok_or("POST /session set no cookie")?.into();
    // Every client connects before the clock starts.
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let cookie = Arc::clone(&cookie);
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            let connection = Connection::open(address).await;
            start.wait().await;
            let mut connection = connection?;
            let (mut accepted, mut conflicts, mut errors) = (0, 0, 0);
            let mut latencies = Vec::with_capacity(requests);
            for _ in 0..requests {
                let sent = Instant::now();
                let answer = connection
                    .send(Method::POST, "/counter", Some(&cookie))
                    .await?;
                latencies.push(sent.elapsed());
                match answer.status {
                    StatusCode::OK => accepted += 1,
                    StatusCode::CONFLICT => conflicts += 1,
                    _ => errors += 1,
                }
            }
            Ok::<_, String>((accepted, conflicts, errors, latencies))
        }));
    }
    start.wait().await;
    let started = Instant::now();
    let mut report = RaceReport {
        sent: clients * requests,
        accepted: 0,
        conflicts: 0,
        errors: 0,
        final_value: 0,
        elapsed: Duration::ZERO,
        p99: Duration::ZERO,
    };
    let mut latencies = Vec::with_capacity(clients * requests);
    for task in tasks {
        let (accepted, conflicts, errors, taken) =
            task.await.map_err(|error| error.to_string())??;
        report.accepted += accepted;
        report.conflicts += conflicts;
        report.errors += errors;
        latencies.extend(taken);
    }
    report.elapsed = started.elapsed();
    latencies.sort_unstable();
    if let Some(last) = latencies.len().checked_sub(1) {
        report.p99 = latencies[last * 99 / 100];
    }
    let answer = setup.send(Method::GET, "/counter", Some(&cookie)).await?;
    report.final_value = answer
        .body
        .trim()
        .parse()
        .map_err(|_| format!("GET /counter answered {}: {:?}", answer.status, answer.body))?;
    Ok(report)
}
