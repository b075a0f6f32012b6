//! The [`RemoteStore`] operations of [`RedisStore`], one Redis command (or script,
//! or pipeline) each.

use async_trait::async_trait;
use redis::{Cmd, RedisResult, Script, Value};
use tandem_core::{
    AddOutcome, CasOutcome, CasToken, Item, NodeId, NodeStatus, Precondition, RemoteStore,
    StoreError, StoreKey, Ttl, WriteItem, WriteOutcome,
};

use super::RedisStore;
use super::writes::Answers;
use crate::layout::{
    TOKEN_LEN, cas_token, item, new_token, remaining_ttl, token_bytes, wire_ttl_millis, with_token,
};

/// `SET key stored [NX] [PX ms]`: a `SET` without `PX` also clears an old TTL.
fn set_command(key: &StoreKey, stored: &[u8], ttl: Ttl, only_if_absent: bool) -> Cmd {
    let mut command = redis::cmd("SET");
    command.arg(key.as_str()).arg(stored);
    if only_if_absent {
        command.arg("NX");
    }
    if let Some(millis) = wire_ttl_millis(ttl) {
        command.arg("PX").arg(millis);
    }
    command
}

/// The TTL argument of the scripts: milliseconds, or empty for none.
fn script_ttl(ttl: Ttl) -> String {
    wire_ttl_millis(ttl).map_or_else(String::new, |millis| millis.to_string())
}

/// `EVALSHA` of `script` on one key, for a pipeline; the caller adds the arguments.
fn script_command(script: &Script, key: &StoreKey) -> Cmd {
    let mut command = redis::cmd("EVALSHA");
    command.arg(script.get_hash()).arg(1).arg(key.as_str());
    command
}

/// `EVALSHA` of the `cas` script, for a pipeline.
fn cas_command(
    script: &Script,
    key: &StoreKey,
    expected: CasToken,
    stored: &[u8],
    ttl: Ttl,
) -> Cmd {
    let mut command = script_command(script, key);
    command
        .arg(&token_bytes(expected)[..])
        .arg(stored)
        .arg(script_ttl(ttl));
    command
}

/// The only answer to a one-command write, or the error that stands in for it.
fn single_answer(node: &NodeId, answers: Answers) -> Result<Value, StoreError> {
    let Answers {
        answers,
        unreplicated,
    } = answers;
    let answer = answers
        .into_iter()
        .next()
        .ok_or_else(|| unexpected(node, "pipeline without an answer"))?
        .map_err(|error| StoreError::Server {
            node: node.clone(),
            message: crate::errors::describe(&error),
        })?;
    match unreplicated {
        Some(error) if wrote(&answer) => Err(error),
        _ => Ok(answer),
    }
}

/// Whether a write's answer says it changed something (so that its replication
/// matters): `OK`, a script's 1, `UNLINK`'s count.
fn wrote(answer: &Value) -> bool {
    match answer {
        Value::Okay => true,
        Value::Int(count) => *count > 0,
        _ => false,
    }
}

/// The scripts' answer to a token-checked operation: 1, -1, 0.
fn cas_outcome(node: &NodeId, answer: i64) -> Result<CasOutcome, StoreError> {
    match answer {
        1 => Ok(CasOutcome::Stored),
        -1 => Ok(CasOutcome::Conflict),
        0 => Ok(CasOutcome::NotFound),
        other => Err(unexpected(node, &format!("script answer {other}"))),
    }
}

fn unexpected(node: &NodeId, what: &str) -> StoreError {
    StoreError::Server {
        node: node.clone(),
        message: format!("unexpected {what}"),
    }
}

/// What one command of a `write_many` pipeline answered, for its precondition.
fn write_outcome(
    node: &NodeId,
    precondition: Precondition,
    token: [u8; TOKEN_LEN],
    answer: RedisResult<Value>,
) -> Result<WriteOutcome, StoreError> {
    let answer = answer.map_err(|error| StoreError::Server {
        node: node.clone(),
        message: crate::errors::describe(&error),
    })?;
    let stored = WriteOutcome::Stored(Some(cas_token(token)));
    match (precondition, answer) {
        (Precondition::None | Precondition::Absent, Value::Okay) => Ok(stored),
        (Precondition::Absent, Value::Nil) => Ok(WriteOutcome::Exists),
        (Precondition::Cas(_), Value::Int(answer)) => Ok(match cas_outcome(node, answer)? {
            CasOutcome::Stored => stored,
            CasOutcome::Conflict => WriteOutcome::Conflict,
            CasOutcome::NotFound => WriteOutcome::NotFound,
        }),
        (_, other) => Err(unexpected(node, &format!("answer to a write: {other:?}"))),
    }
}

#[async_trait]
impl RemoteStore for RedisStore {
    async fn get(&self, node: &NodeId, key: &StoreKey) -> Result<Option<Item>, StoreError> {
        let stored: Option<Vec<u8>> = self
            .call(node, None, |mut connection| async move {
                redis::cmd("GET")
                    .arg(key.as_str())
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        stored.map(|stored| item(node, stored)).transpose()
    }

    async fn set(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        self.write(node, key, value, ttl, Precondition::None)
            .await
            .map(|_| ())
    }

    async fn add(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<AddOutcome, StoreError> {
        Ok(
            match self
                .write(node, key, value, ttl, Precondition::Absent)
                .await?
            {
                WriteOutcome::Exists => AddOutcome::Exists,
                _ => AddOutcome::Stored,
            },
        )
    }

    async fn cas(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        Ok(
            match self
                .write(node, key, value, ttl, Precondition::Cas(cas))
                .await?
            {
                WriteOutcome::Stored(_) => CasOutcome::Stored,
                WriteOutcome::NotFound => CasOutcome::NotFound,
                _ => CasOutcome::Conflict,
            },
        )
    }

    async fn write(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
        precondition: Precondition,
    ) -> Result<WriteOutcome, StoreError> {
        self.check_size(value.len())?;
        let token = new_token();
        let stored = with_token(value, token);
        let script = &self.shared.scripts.cas;
        let command = match precondition {
            Precondition::None => set_command(key, &stored, ttl, false),
            Precondition::Absent => set_command(key, &stored, ttl, true),
            Precondition::Cas(expected) => cas_command(script, key, expected, &stored, ttl),
        };
        let answers = self.send_writes(node, script, vec![command]).await?;
        let answer = single_answer(node, answers)?;
        write_outcome(node, precondition, token, Ok(answer))
    }

    async fn write_many(
        &self,
        node: &NodeId,
        items: &[WriteItem<'_>],
    ) -> Vec<Result<WriteOutcome, StoreError>> {
        // Oversized items are refused alone; the rest go out in one pipeline.
        let mut results: Vec<Option<Result<WriteOutcome, StoreError>>> = items
            .iter()
            .map(|item| self.check_size(item.value.len()).err().map(Err))
            .collect();
        let sendable: Vec<usize> = (0..items.len())
            .filter(|&index| results[index].is_none())
            .collect();
        if sendable.is_empty() {
            return results.into_iter().flatten().collect();
        }
        let tokens: Vec<[u8; TOKEN_LEN]> = sendable.iter().map(|_| new_token()).collect();
        let script = &self.shared.scripts.cas;
        let commands: Vec<Cmd> = sendable
            .iter()
            .zip(&tokens)
            .map(|(&index, &token)| {
                let item = &items[index];
                let stored = with_token(item.value, token);
                match item.precondition {
                    Precondition::None => set_command(item.key, &stored, item.ttl, false),
                    Precondition::Absent => set_command(item.key, &stored, item.ttl, true),
                    Precondition::Cas(expected) => {
                        cas_command(script, item.key, expected, &stored, item.ttl)
                    }
                }
            })
            .collect();
        match self.send_writes(node, script, commands).await {
            Ok(Answers {
                answers,
                unreplicated,
            }) => {
                for ((&index, &token), answer) in sendable.iter().zip(&tokens).zip(answers) {
                    let precondition = items[index].precondition;
                    let outcome = write_outcome(node, precondition, token, answer);
                    results[index] = Some(match (&unreplicated, outcome) {
                        (Some(error), Ok(WriteOutcome::Stored(_))) => Err(error.clone()),
                        (_, outcome) => outcome,
                    });
                }
            }
            Err(error) => {
                for &index in &sendable {
                    results[index] = Some(Err(error.clone()));
                }
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| Err(unexpected(node, "pipeline without an answer")))
            })
            .collect()
    }

    async fn delete(&self, node: &NodeId, key: &StoreKey) -> Result<bool, StoreError> {
        let mut command = redis::cmd("UNLINK");
        command.arg(key.as_str());
        let script = &self.shared.scripts.delete_if;
        let answer = single_answer(node, self.send_writes(node, script, vec![command]).await?)?;
        match answer {
            Value::Int(removed) => Ok(removed > 0),
            other => Err(unexpected(node, &format!("answer to UNLINK: {other:?}"))),
        }
    }

    async fn delete_if(
        &self,
        node: &NodeId,
        key: &StoreKey,
        cas: CasToken,
    ) -> Result<CasOutcome, StoreError> {
        let script = &self.shared.scripts.delete_if;
        let mut command = script_command(script, key);
        command.arg(&token_bytes(cas)[..]);
        match single_answer(node, self.send_writes(node, script, vec![command]).await?)? {
            Value::Int(answer) => cas_outcome(node, answer),
            other => Err(unexpected(node, &format!("script answer {other:?}"))),
        }
    }

    async fn append(
        &self,
        node: &NodeId,
        key: &StoreKey,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<(), StoreError> {
        let limit = self.shared.config.max_value_size();
        self.check_size(value.len())?;
        let script = &self.shared.scripts.append;
        let mut command = script_command(script, key);
        command
            .arg(value)
            .arg(&new_token()[..])
            .arg(script_ttl(ttl))
            .arg(limit);
        let answers = self.send_writes(node, script, vec![command]).await?;
        let Answers {
            answers,
            unreplicated,
        } = answers;
        let answer = match answers.into_iter().next() {
            Some(Ok(Value::Int(answer))) => answer,
            Some(Ok(other)) => return Err(unexpected(node, &format!("append answer {other:?}"))),
            Some(Err(error)) => {
                return Err(StoreError::Server {
                    node: node.clone(),
                    message: crate::errors::describe(&error),
                });
            }
            None => return Err(unexpected(node, "pipeline without an answer")),
        };
        if answer == 0
            && let Some(error) = unreplicated
        {
            return Err(error);
        }
        match usize::try_from(answer) {
            Ok(0) => Ok(()),
            Ok(size) => Err(StoreError::TooLarge { size, limit }),
            Err(_) => Err(unexpected(node, &format!("append answer {answer}"))),
        }
    }

    async fn get_with_ttl(
        &self,
        node: &NodeId,
        key: &StoreKey,
    ) -> Result<Option<(Item, Ttl)>, StoreError> {
        let (stored, pttl): (Option<Vec<u8>>, i64) = self
            .call(node, None, |mut connection| async move {
                redis::pipe()
                    .atomic()
                    .cmd("GET")
                    .arg(key.as_str())
                    .cmd("PTTL")
                    .arg(key.as_str())
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        let (Some(stored), Some(ttl)) = (stored, remaining_ttl(pttl)) else {
            return Ok(None);
        };
        Ok(Some((item(node, stored)?, ttl)))
    }

    async fn touch(&self, node: &NodeId, key: &StoreKey, ttl: Ttl) -> Result<bool, StoreError> {
        let existed: i64 = self
            .call(node, None, |mut connection| async move {
                match wire_ttl_millis(ttl) {
                    Some(millis) => {
                        redis::cmd("PEXPIRE")
                            .arg(key.as_str())
                            .arg(millis)
                            .query_async(&mut connection)
                            .await
                    }
                    // PERSIST answers 0 for a missing key and for one without a
                    // TTL alike, so EXISTS tells them apart, in the same transaction.
                    None => {
                        let (existed, _): (i64, i64) = redis::pipe()
                            .atomic()
                            .cmd("EXISTS")
                            .arg(key.as_str())
                            .cmd("PERSIST")
                            .arg(key.as_str())
                            .query_async(&mut connection)
                            .await?;
                        Ok(existed)
                    }
                }
            })
            .await?;
        Ok(existed > 0)
    }

    async fn get_and_touch(
        &self,
        node: &NodeId,
        key: &StoreKey,
        ttl: Ttl,
    ) -> Result<Option<Item>, StoreError> {
        let stored: Option<Vec<u8>> = self
            .call(node, None, |mut connection| async move {
                let mut command = redis::cmd("GETEX");
                command.arg(key.as_str());
                match wire_ttl_millis(ttl) {
                    Some(millis) => command.arg("PX").arg(millis),
                    None => command.arg("PERSIST"),
                };
                command.query_async(&mut connection).await
            })
            .await?;
        stored.map(|stored| item(node, stored)).transpose()
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.shared
            .nodes
            .iter()
            .map(|node| node.id.clone())
            .collect()
    }

    fn is_available(&self, node: &NodeId) -> bool {
        self.shared
            .node(node)
            .is_ok_and(|(_, node)| node.health.is_up())
    }

    fn max_item_size(&self) -> usize {
        self.shared.config.max_value_size()
    }

    /// Another master after a failover, a restarted server, or a cluster whose
    /// configuration epoch rose; an atomic read, no network.
    fn node_epoch(&self, node: &NodeId) -> u64 {
        self.epoch(node).unwrap_or(0)
    }

    /// A Sentinel group and a Cluster replicate themselves; a standalone server
    /// does not fail over, whatever replicas it has.
    fn replicates(&self, node: &NodeId) -> bool {
        self.shared
            .node(node)
            .is_ok_and(|(_, node)| node.deployment.replicates())
    }

    fn node_status(&self) -> Vec<NodeStatus> {
        self.health()
            .into_iter()
            .map(|health| {
                let mut status = NodeStatus::up_or_down(health.id, health.up);
                status.address = Some(health.address);
                status.down_since = health.down_since;
                status.last_error = health.last_error;
                status.operations = health.operations;
                status.failures = health.failures;
                status.down_transitions = health.marked_down;
                status.mean_latency = health.mean_latency;
                status
            })
            .collect()
    }
}
