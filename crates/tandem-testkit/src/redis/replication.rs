//! Waiting on replicated deployments: polling, `ROLE`, replicas catching up.

use super::*;

/// Polls `probe` every [`process::POLL_INTERVAL`] (at least) until it gives a value
/// or `limit` has passed; the probe runs once more at the limit.
pub(super) fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_PAUSE);
    }
}

/// The pause between two checks of a replicated deployment: each check asks
/// several servers, and a failover takes seconds.
pub(super) const POLL_PAUSE: Duration = Duration::from_millis(50);

/// The `ROLE` of a server: `master`, or `slave` with the port of its master and the
/// state of its link (`connected` once it has loaded the master's data); `None` if
/// it is not running or does not answer.
pub(super) fn role(server: &RedisProcess) -> Option<(String, Option<(u16, String)>)> {
    if !server.is_running() {
        return None;
    }
    let RedisReply::Array(fields) = server.request(&["ROLE"], IO_TIMEOUT).ok()? else {
        return None;
    };
    let role = fields.first()?.as_str()?.to_owned();
    let master = (role == "slave")
        .then(|| {
            let port = match fields.get(2)? {
                RedisReply::Integer(port) => u16::try_from(*port).ok()?,
                _ => return None,
            };
            Some((port, fields.get(3)?.as_str()?.to_owned()))
        })
        .flatten();
    Some((role, master))
}

/// Waits until every replica `master` lists (`ROLE`) has processed the master's
/// replication stream up to where it was at the call (the replica's own `ROLE`
/// offset), so that a write made before the call can be read on them. `members` are
/// the servers the replicas are looked up among, by port.
///
/// `WAIT` would not do: the kit sends each command on a fresh connection, which has
/// written nothing for `WAIT` to wait for.
///
/// # Panics
///
/// If the master does not answer, or a replica does not catch up within `timeout`.
pub(super) fn wait_for_replicas_of(
    master: &RedisProcess,
    members: &[RedisProcess],
    timeout: Duration,
) {
    let reply = master.request(&["ROLE"], IO_TIMEOUT);
    let (offset, replicas) = match &reply {
        Ok(RedisReply::Array(fields))
            if fields.first().and_then(RedisReply::as_str) == Some("master") =>
        {
            let offset = match fields.get(1) {
                Some(RedisReply::Integer(offset)) => *offset,
                _ => panic!("ROLE of the master {}: {reply:?}", master.address()),
            };
            let replicas: Vec<u16> = match fields.get(2) {
                Some(RedisReply::Array(replicas)) => replicas
                    .iter()
                    .filter_map(|replica| match replica {
                        RedisReply::Array(addr) => addr.get(1)?.as_str()?.parse().ok(),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            (offset, replicas)
        }
        _ => panic!("ROLE of the master {}: {reply:?}", master.address()),
    };
    let behind = |port: &u16| {
        let caught_up = members
            .iter()
            .find(|member| member.port() == *port)
            .and_then(
                |replica| match replica.request(&["ROLE"], IO_TIMEOUT).ok()? {
                    RedisReply::Array(fields) => match fields.get(4)? {
                        RedisReply::Integer(processed) => Some(*processed >= offset),
                        _ => None,
                    },
                    _ => None,
                },
            );
        caught_up != Some(true)
    };
    if poll(timeout, || (!replicas.iter().any(behind)).then_some(())).is_none() {
        let behind: Vec<u16> = replicas
            .iter()
            .copied()
            .filter(|port| behind(port))
            .collect();
        panic!(
            "the replicas on ports {behind:?} of the master {} did not reach its replication offset {offset} within {timeout:?}",
            master.address()
        );
    }
}
