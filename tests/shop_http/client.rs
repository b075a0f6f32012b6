//! A minimal HTTP/1.1 client over a keep-alive `TcpStream`, enough for the shop's
//! routes: no request bodies, `Content-Length` or chunked responses.
//!
//! Written by hand rather than with hyper's client: the root package's hyper has the
//! server side only, and these tests add no dependency. A connection is never reopened
//! behind the caller's back: a connection the server drops mid-request is a failure the
//! tests must see, not one a retry hides.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The shop's session cookie.
pub const COOKIE_NAME: &str = "tandem_session";

/// How long one request may take before it counts as a hang. Far above anything a
/// healthy request needs (the longest wait in the library is the 5 s lock timeout),
/// so that a loaded machine does not fail a test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest response head or body accepted: the shop's answers are a few hundred bytes.
const MAX_RESPONSE: usize = 1 << 20;

/// One response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Every `Set-Cookie` header, verbatim.
    pub set_cookies: Vec<String>,
    /// The `Content-Type` header, empty if none.
    pub content_type: String,
    /// The `Allow` header (of a 405), empty if none.
    pub allow: String,
    pub body: String,
}

impl Reply {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The values the response sets the session cookie to (a cleared cookie has an
    /// empty value and is left out).
    pub fn session_cookies(&self) -> Vec<String> {
        self.set_cookies
            .iter()
            .filter_map(|header| {
                let pair = header.split(';').next()?.trim();
                let (name, value) = pair.split_once('=')?;
                (name == COOKIE_NAME && !value.is_empty()).then(|| value.to_owned())
            })
            .collect()
    }

    /// The one session cookie value the response sets, if exactly one.
    pub fn session_cookie(&self) -> Option<String> {
        let mut values = self.session_cookies();
        (values.len() == 1).then(|| values.remove(0))
    }

    /// Whether the response tells the browser to drop the session cookie.
    pub fn clears_cookie(&self) -> bool {
        self.set_cookies.iter().any(|header| {
            header.starts_with(&format!("{COOKIE_NAME}=;")) && header.contains("Max-Age=0")
        })
    }

    /// One line for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} set-cookie={:?} body={}",
            self.status,
            self.set_cookies,
            self.body.trim()
        )
    }
}

/// A keep-alive connection to one server, opened on first use.
pub struct Client {
    address: SocketAddr,
    stream: Option<TcpStream>,
    /// Bytes read past the end of the previous response (none with this server, which
    /// answers one request at a time, but a correct client keeps them).
    buffer: Vec<u8>,
}

impl Client {
    pub fn new(address: SocketAddr) -> Client {
        Client {
            address,
            stream: None,
            buffer: Vec::new(),
        }
    }

    /// Sends `method path` with the session cookie `cookie`, if any.
    ///
    /// Any transport failure (refused, reset, closed mid-response, timed out) is an
    /// `Err`, and the connection is dropped so that the next request opens a new one.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
    ) -> Result<Reply, String> {
        let result = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.exchange(method, path, cookie),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        match result {
            Ok((reply, keep_alive)) => {
                if !keep_alive {
                    self.stream = None;
                }
                Ok(reply)
            }
            Err(error) => {
                self.stream = None;
                self.buffer.clear();
                Err(format!("{method} {path} to {}: {error}", self.address))
            }
        }
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
    ) -> Result<(Reply, bool), String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.address)
                .await
                .map_err(|error| format!("connect: {error}"))?;
            stream
                .set_nodelay(true)
                .map_err(|error| format!("nodelay: {error}"))?;
            self.stream = Some(stream);
            self.buffer.clear();
        }
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n",
            self.address
        );
        if let Some(value) = cookie {
            request.push_str(&format!("Cookie: {COOKIE_NAME}={value}\r\n"));
        }
        request.push_str("\r\n");
        let stream = self.stream.as_mut().expect("connected above");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|error| format!("write: {error}"))?;

        let head_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end;
            }
            fill(stream, &mut self.buffer).await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end])
            .map_err(|_| "response head is not UTF-8".to_owned())?
            .to_owned();
        self.buffer.drain(..head_end + 4);

        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut set_cookies = Vec::new();
        let mut content_type = String::new();
        let mut allow = String::new();
        let mut content_length = None;
        let mut chunked = false;
        let mut keep_alive = true;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("bad header line {line:?}"));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "set-cookie" => set_cookies.push(value.to_owned()),
                "content-type" => content_type = value.to_owned(),
                "allow" => allow = value.to_owned(),
                "content-length" => {
                    content_length = Some(
                        value
                            .parse::<usize>()
                            .map_err(|_| format!("bad Content-Length {value:?}"))?,
                    );
                }
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => keep_alive = !value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }

        let body = if chunked {
            read_chunked(stream, &mut self.buffer).await?
        } else if let Some(length) = content_length {
            if length > MAX_RESPONSE {
                return Err(format!("body of {length} bytes"));
            }
            while self.buffer.len() < length {
                fill(stream, &mut self.buffer).await?;
            }
            self.buffer.drain(..length).collect()
        } else {
            // Neither: the body runs to the end of the connection.
            keep_alive = false;
            loop {
                match read_some(stream, &mut self.buffer).await? {
                    0 => break std::mem::take(&mut self.buffer),
                    _ if self.buffer.len() > MAX_RESPONSE => {
                        return Err("response too large".into());
                    }
                    _ => {}
                }
            }
        };
        let body = String::from_utf8(body).map_err(|_| "body is not UTF-8".to_owned())?;
        Ok((
            Reply {
                status,
                set_cookies,
                content_type,
                allow,
                body,
            },
            keep_alive,
        ))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Reads what is available; `Ok(0)` at the end of the connection.
async fn read_some(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 8192];
    let read = stream
        .read(&mut chunk)
        .await
        .map_err(|error| format!("read: {error}"))?;
    buffer.extend_from_slice(&chunk[..read]);
    Ok(read)
}

/// Reads more, where the connection ending is an error (a response is incomplete).
async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    if buffer.len() > MAX_RESPONSE {
        return Err("response too large".into());
    }
    match read_some(stream, buffer).await? {
        0 => Err("connection closed before the response was complete".into()),
        _ => Ok(()),
    }
}

async fn read_chunked(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(end) = find(buffer, b"\r\n") {
                break end;
            }
            fill(stream, buffer).await?;
        };
        let line = String::from_utf8_lossy(&buffer[..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        buffer.drain(..line_end + 2);
        if size == 0 {
            // No trailers from this server: the final CRLF follows.
            while buffer.len() < 2 {
                fill(stream, buffer).await?;
            }
            buffer.drain(..2);
            return Ok(body);
        }
        if body.len() + size > MAX_RESPONSE {
            return Err("chunked body too large".into());
        }
        while buffer.len() < size + 2 {
            fill(stream, buffer).await?;
        }
        body.extend(buffer.drain(..size));
        buffer.drain(..2);
    }
}
