//! Just enough RESP2 for the kit to ask its own servers something (readiness, `SAVE`,
//! `KEYS`, `TTL`): commands as arrays of bulk strings, replies parsed into
//! [`RedisReply`]. Not a Redis client: no pipelining, no RESP3, no pushes.

use std::io::{self, BufRead, BufReader, Read, Write};

/// A reply of a Redis server, as RESP2 has it.
///
/// ```
/// use tandem_testkit::RedisReply;
///
/// assert_eq!(RedisReply::Status("PONG".into()).as_str(), Some("PONG"));
/// assert_eq!(RedisReply::Bulk(b"value".to_vec()).as_str(), Some("value"));
/// assert_eq!(RedisReply::Integer(3).as_str(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisReply {
    /// A simple string, such as `OK` or `PONG`.
    Status(String),
    /// An error, such as `NOAUTH Authentication required.` (the whole line after `-`).
    Error(String),
    /// An integer, such as the answer to `TTL` or `DBSIZE`.
    Integer(i64),
    /// A bulk string: a value, as `GET` answers it.
    Bulk(Vec<u8>),
    /// An array of replies, as `KEYS` answers.
    Array(Vec<RedisReply>),
    /// The null bulk string or null array: no value (`GET` of a missing key).
    Nil,
}

impl RedisReply {
    /// The text of a status, or of a bulk string that is UTF-8; `None` for anything
    /// else.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            RedisReply::Status(text) => Some(text),
            RedisReply::Bulk(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }
}

/// The longest array or bulk string the kit accepts: a guard against reading a
/// garbled length, far above anything a test stores.
const MAX_LENGTH: usize = 512 * 1024 * 1024;

/// One connection to a server: sends commands and reads their replies in turn.
pub(crate) struct Connection<S: Read + Write> {
    stream: BufReader<S>,
}

impl<S: Read + Write> Connection<S> {
    pub(crate) fn new(stream: S) -> Connection<S> {
        Connection {
            stream: BufReader::new(stream),
        }
    }

    /// Sends `args` as one command and reads its reply.
    pub(crate) fn request<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<RedisReply> {
        self.stream.get_mut().write_all(&encode(args))?;
        read_reply(&mut self.stream)
    }
}

/// `args` as a RESP array of bulk strings.
pub(crate) fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// One line without its `\r\n`.
fn read_line(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a reply",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(invalid(format!(
            "reply line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

/// A length or integer field; `-1` is the null marker.
fn parse_integer(text: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            invalid(format!(
                "not an integer: {:?}",
                String::from_utf8_lossy(text)
            ))
        })
}

/// A length; `None` for the null marker `-1`.
fn parse_length(text: &[u8]) -> io::Result<Option<usize>> {
    match parse_integer(text)? {
        -1 => Ok(None),
        length => usize::try_from(length)
            .ok()
            .filter(|&length| length <= MAX_LENGTH)
            .map(Some)
            .ok_or_else(|| invalid(format!("bad length {length}"))),
    }
}

pub(crate) fn read_reply(reader: &mut impl BufRead) -> io::Result<RedisReply> {
    let line = read_line(reader)?;
    let Some((&kind, rest)) = line.split_first() else {
        return Err(invalid("empty reply line".to_owned()));
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Ok(RedisReply::Status(text())),
        b'-' => Ok(RedisReply::Error(text())),
        b':' => Ok(RedisReply::Integer(parse_integer(rest)?)),
        b'$' => match parse_length(rest)? {
            None => Ok(RedisReply::Nil),
            Some(length) => {
                let mut value = vec![0; length + 2];
                reader.read_exact(&mut value)?;
                if !value.ends_with(b"\r\n") {
                    return Err(invalid("bulk string not ended by CRLF".to_owned()));
                }
                value.truncate(length);
                Ok(RedisReply::Bulk(value))
            }
        },
        b'*' => match parse_length(rest)? {
            None => Ok(RedisReply::Nil),
            Some(count) => (0..count)
                .map(|_| read_reply(reader))
                .collect::<io::Result<_>>()
                .map(RedisReply::Array),
        },
        _ => Err(invalid(format!(
            "unknown reply type in {:?}",
            String::from_utf8_lossy(&line)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<RedisReply> {
        read_reply(&mut &bytes[..])
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn every_reply_type_parses() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), RedisReply::Status("OK".into()));
        assert_eq!(
            parse(b"-NOAUTH Authentication required.\r\n").unwrap(),
            RedisReply::Error("NOAUTH Authentication required.".into())
        );
        assert_eq!(parse(b":-2\r\n").unwrap(), RedisReply::Integer(-2));
        assert_eq!(
            parse(b"$4\r\na\r\nb\r\n").unwrap(),
            RedisReply::Bulk(b"a\r\nb".to_vec())
        );
        assert_eq!(parse(b"$-1\r\n").unwrap(), RedisReply::Nil);
        assert_eq!(parse(b"*-1\r\n").unwrap(), RedisReply::Nil);
        assert_eq!(
            parse(b"*2\r\n$1\r\nx\r\n*1\r\n:7\r\n").unwrap(),
            RedisReply::Array(vec![
                RedisReply::Bulk(b"x".to_vec()),
                RedisReply::Array(vec![RedisReply::Integer(7)]),
            ])
        );
    }

    #[test]
    fn garbled_replies_are_errors() {
        for garbled in [
            &b""[..],
            b"+OK\n",
            b"?what\r\n",
            b":x\r\n",
            b"$-5\r\n",
            b"$3\r\nab",
            b"$2\r\nabc\r\n",
            b"*2\r\n:1\r\n",
        ] {
            assert!(
                parse(garbled).is_err(),
                "{:?}",
                String::from_utf8_lossy(garbled)
            );
        }
    }
}
