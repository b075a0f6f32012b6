//! Redirections the cluster client did not follow through.
//!
//! The cluster client follows an `ASK` with `ASKING` on the target's shared
//! connection, and a command of another caller sent meanwhile on it can take the
//! `ASKING` for itself: the target then answers `MOVED` to the source, which answers
//! `ASK` again. During a resharding under load that exhausts the client's retries,
//! and a pipeline sent with `ignore_errors` gets its redirections as answers, which
//! the client does not follow at all. So a redirected command (never executed: safe
//! to send again) is sent again here: after an `ASK`, to the node it names, with
//! `ASKING` in the same pipeline, so that nothing can come between them; after a
//! `MOVED`, as before, once the client has read the new owner. The operation's
//! timeout bounds the whole.

use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};

/// How often a redirected command is sent again.
const RETRIES: u32 = 20;
/// The pause before sending again after a `MOVED`, growing by as much each time.
const PAUSE: Duration = Duration::from_millis(1);

/// Where a redirection sends a command.
enum Redirection {
    /// `ASK`: once, to this node, after `ASKING`.
    Ask { host: String, port: u16 },
    /// `MOVED` (or an `ASK` without a readable address): wherever the client's slot
    /// map says, once it has been read again.
    Moved,
}

fn redirection(code: &str, detail: Option<&str>) -> Option<Redirection> {
    let address = || {
        let address = detail?.split_ascii_whitespace().nth(1)?;
        let (host, port) = address.rsplit_once(':')?;
        Some((host.to_owned(), port.parse().ok()?))
    };
    match code {
        "ASK" => Some(match address() {
            Some((host, port)) => Redirection::Ask { host, port },
            None => Redirection::Moved,
        }),
        "MOVED" => Some(Redirection::Moved),
        _ => None,
    }
}

fn error_redirection(error: &RedisError) -> Option<Redirection> {
    redirection(error.code()?, error.detail())
}

fn answer_redirection(answer: &Value) -> Option<Redirection> {
    match answer {
        Value::ServerError(error) => redirection(error.code(), error.details()),
        _ => None,
    }
}

/// Sends `command`, following the redirections the client gave up on.
pub(super) async fn command(
    connection: &mut ClusterConnection,
    command: &Cmd,
) -> RedisResult<Value> {
    use redis::aio::ConnectionLike;
    let mut redirected = 0;
    loop {
        let answer = connection.req_packed_command(command).await;
        let found = match &answer {
            Err(error) => error_redirection(error),
            Ok(_) => None,
        };
        let Some(found) = found.filter(|_| redirected < RETRIES) else {
            return answer;
        };
        redirected += 1;
        match found {
            Redirection::Ask { host, port } => {
                let mut asking = redis::pipe();
                asking.cmd("ASKING").add_command(command.clone());
                let answers = connection
                    .route_pipeline(
                        asking,
                        1,
                        1,
                        SingleNodeRoutingInfo::ByAddress { host, port },
                    )
                    .await;
                if let Ok(mut answers) = answers
                    && let Some(answer) = answers.pop()
                    && answer_redirection(&answer).is_none()
                {
                    return answer.extract_error();
                }
            }
            Redirection::Moved => tokio::time::sleep(PAUSE * redirected).await,
        }
    }
}

/// Sends the commands of `pipeline` (answers `offset..offset + count`), following
/// the redirections the client gave up on or left in the answers.
pub(super) async fn pipeline(
    connection: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    use redis::aio::ConnectionLike;
    let mut redirected = 0;
    loop {
        let answers = connection
            .req_packed_commands(pipeline, offset, count)
            .await;
        let found = match &answers {
            Err(error) => error_redirection(error),
            Ok(answers) => answers.iter().find_map(answer_redirection),
        };
        let Some(found) = found.filter(|_| redirected < RETRIES) else {
            return answers;
        };
        redirected += 1;
        match found {
            Redirection::Ask { host, port } => {
                let mut asking = redis::pipe();
                asking.cmd("ASKING");
                for command in pipeline.cmd_iter() {
                    asking.add_command(command.clone());
                }
                let answers = connection
                    .route_pipeline(
                        asking,
                        offset + 1,
                        count,
                        SingleNodeRoutingInfo::ByAddress { host, port },
                    )
                    .await;
                if let Ok(answers) = answers
                    && answers
                        .iter()
                        .all(|answer| answer_redirection(answer).is_none())
                {
                    return Ok(answers);
                }
            }
            Redirection::Moved => tokio::time::sleep(PAUSE * redirected).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirections_are_read() {
        assert!(matches!(
            redirection("ASK", Some("3999 127.0.0.1:6381")),
            Some(Redirection::Ask { host, port: 6381 }) if host == "127.0.0.1"
        ));
        assert!(matches!(
            redirection("ASK", Some("3999")),
            Some(Redirection::Moved)
        ));
        assert!(matches!(
            redirection("MOVED", Some("3999 127.0.0.1:6381")),
            Some(Redirection::Moved)
        ));
        assert!(redirection("ERR", Some("x")).is_none());
    }
}
