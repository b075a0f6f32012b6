//! How writes reach a node: as pipelines of commands (single-slot ones on a
//! cluster), and, with the durable setting, each followed by `WAIT` on a connection
//! of its own.

use std::time::Duration;

use futures_util::future::join_all;
use redis::{Cmd, RedisResult, Script, Value};
use tandem_core::{NodeId, StoreError};

use super::RedisStore;
use crate::config::{Unreplicated, WaitReplicas};
use crate::deployment::Connection;
use crate::errors::is_node_failure;

/// What a node answered to the commands of one write.
pub(super) struct Answers {
    /// One answer per command, in order.
    pub(super) answers: Vec<RedisResult<Value>>,
    /// With the durable setting and too few replica acknowledgements in time: the
    /// error each stored item reports instead of success.
    pub(super) unreplicated: Option<StoreError>,
}

impl RedisStore {
    /// Sends `commands` (writes, at most one per key) to `node`: one pipeline, or,
    /// on a cluster, one per command (keys of different slots live on different
    /// masters), at the same time. With the durable setting each pipeline ends with
    /// `WAIT` and runs on an exclusive connection. `script` is loaded again for
    /// commands that find the script cache empty.
    pub(super) async fn send_writes(
        &self,
        node: &NodeId,
        script: &Script,
        commands: Vec<Cmd>,
    ) -> Result<Answers, StoreError> {
        let cluster = self
            .shared
            .node(node)
            .is_ok_and(|(_, node)| node.deployment.is_cluster());
        let Some(wait) = self.shared.config.wait_replicas() else {
            let answers = self
                .call(node, None, |connection| {
                    send(connection, script, commands, cluster, None)
                })
                .await?;
            return Ok(Answers {
                answers: answers.0,
                unreplicated: None,
            });
        };
        let (answers, acknowledged) = self
            .call_exclusive(node, wait.timeout, |connection| {
                send(connection, script, commands, cluster, Some(wait))
            })
            .await?;
        let acknowledged = acknowledged.unwrap_or(u32::MAX);
        if let Ok((_, state)) = self.shared.node(node) {
            state.count_waited(acknowledged < wait.replicas);
        }
        let unreplicated = (acknowledged < wait.replicas
            && wait.on_shortfall == Unreplicated::Fail)
            .then(|| StoreError::Unreplicated {
                node: node.clone(),
                acknowledged,
                wanted: wait.replicas,
            });
        Ok(Answers {
            answers,
            unreplicated,
        })
    }
}

/// Sends `commands` on `connection`: see [`RedisStore::send_writes`]. Returns the
/// answers and, with `wait`, the fewest replica acknowledgements any pipeline got.
async fn send(
    connection: Connection,
    script: &Script,
    commands: Vec<Cmd>,
    cluster: bool,
    wait: Option<WaitReplicas>,
) -> RedisResult<(Vec<RedisResult<Value>>, Option<u32>)> {
    if !cluster || commands.len() < 2 {
        return pipeline(connection, script, commands, wait).await;
    }
    let singles = commands
        .into_iter()
        .map(|command| pipeline(connection.clone(), script, vec![command], wait));
    let mut answers = Vec::new();
    let mut fewest: Option<u32> = None;
    for outcome in join_all(singles).await {
        match outcome {
            Ok((mut answer, acknowledged)) => {
                answers.push(answer.pop().unwrap_or_else(|| {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "a pipeline without an answer",
                    )))
                }));
                if let Some(acknowledged) = acknowledged {
                    fewest = Some(fewest.map_or(acknowledged, |fewest| fewest.min(acknowledged)));
                }
            }
            Err(error) if is_node_failure(&error) => return Err(error),
            Err(error) => answers.push(Err(error)),
        }
    }
    Ok((answers, fewest))
}

/// Sends `commands` in one pipeline (followed by `WAIT` with `wait`); each command
/// answers on its own. Commands that find the script cache empty (`NOSCRIPT`, after
/// a server restart) are sent again once the script is loaded. An answer that says
/// the node cannot serve fails the whole exchange.
pub(super) async fn pipeline(
    mut connection: Connection,
    script: &Script,
    commands: Vec<Cmd>,
    wait: Option<WaitReplicas>,
) -> RedisResult<(Vec<RedisResult<Value>>, Option<u32>)> {
    let send = |commands: Vec<&Cmd>| {
        let mut pipe = redis::pipe();
        for command in commands {
            pipe.add_command(command.clone());
        }
        if let Some(wait) = wait {
            pipe.cmd("WAIT")
                .arg(wait.replicas)
                .arg(wait_millis(wait.timeout));
        }
        pipe.ignore_errors();
        pipe
    };
    let mut answers: Vec<RedisResult<Value>> = send(commands.iter().collect())
        .query_async(&mut connection)
        .await?;
    let mut acknowledged = wait.map(|_| answers.pop());
    let no_script = |answers: &[RedisResult<Value>]| -> Vec<usize> {
        answers
            .iter()
            .enumerate()
            .filter(|(_, answer)| matches!(answer, Err(error) if error.code() == Some("NOSCRIPT")))
            .map(|(index, _)| index)
            .collect()
    };
    // On a cluster, `SCRIPT LOAD` goes to the masters the client knows of: a
    // master that is importing the slot (a resharding: the command was sent there
    // after an `ASK`) may not be one of them yet, and answers `NOSCRIPT` again
    // until the client learns of it, within milliseconds of the slot's move. So
    // this is tried a few times (the operation's timeout bounds it).
    for attempt in 0..NOSCRIPT_ATTEMPTS {
        let no_script = no_script(&answers);
        if no_script.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(NOSCRIPT_PAUSE * attempt).await;
        }
        script.load_async(&mut connection).await?;
        let mut again: Vec<RedisResult<Value>> =
            send(no_script.iter().map(|&index| &commands[index]).collect())
                .query_async(&mut connection)
                .await?;
        // `WAIT` counts acknowledgements of every earlier write on the connection:
        // the last one answers for all.
        if wait.is_some() {
            acknowledged = Some(again.pop());
        }
        for (index, answer) in no_script.into_iter().zip(again) {
            answers[index] = answer;
        }
    }
    if let Some(Err(error)) = answers
        .iter()
        .find(|answer| matches!(answer, Err(error) if is_node_failure(error)))
    {
        return Err(error.clone());
    }
    let acknowledged = match acknowledged {
        None => None,
        Some(Some(Ok(Value::Int(count)))) => Some(u32::try_from(count).unwrap_or(0)),
        Some(Some(Ok(other))) => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "an unexpected answer to WAIT",
                format!("{other:?}"),
            )));
        }
        Some(Some(Err(error))) => return Err(error),
        Some(None) => Some(0),
    };
    Ok((answers, acknowledged))
}

/// How often commands that find the script cache empty are sent again, each time
/// after loading the script, and the pause before the second time (growing by as
/// much each time).
const NOSCRIPT_ATTEMPTS: u32 = 10;
const NOSCRIPT_PAUSE: Duration = Duration::from_millis(5);

/// `WAIT`'s timeout: whole milliseconds, at least 1 (0 would wait forever).
fn wait_millis(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_never_waits_forever() {
        assert_eq!(wait_millis(Duration::ZERO), 1);
        assert_eq!(wait_millis(Duration::from_micros(1500)), 1);
        assert_eq!(wait_millis(Duration::from_millis(250)), 250);
    }
}
