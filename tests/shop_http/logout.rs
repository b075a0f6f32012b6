//! Logout sticks: once `POST /logout` was answered, a stolen copy of the cookie loads
//! nothing, on either server, also when the thief's requests with it were running on
//! both servers across the logout.
//!
//! The attack: the owner logs in (user `owner`, one item in the cart), and the cookie
//! X is stolen. The thief keeps requests with X running on both servers (`GET /cart`
//! and `POST /cart/items?sku=a&qty=1` loops) while the owner does `POST /logout` with
//! X on their own server (`a1` in sticky mode). The loops stop shortly after; 2.5 s
//! later (past the 2 s negative cache, so each server asks memcached again) `GET /cart`
//! with X must answer no user and an empty cart on both servers. Eight rounds, each
//! with a fresh session; the check of a round runs while the next rounds attack.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::harness::{
    AXUM_PAIR, MIXED_PAIR, MIXED_PAIR_REVERSED, Observation, Pair, Server, Setting, Traffic,
    acceptable, until_served, user_field,
};

/// Logouts per test, each of a fresh session.
const ROUNDS: usize = 8;
/// How long the thief's loops run before the logout, and after it was answered.
const BEFORE_LOGOUT: Duration = Duration::from_millis(150);
const AFTER_LOGOUT: Duration = Duration::from_millis(200);
/// How long after the loops stopped the stolen cookie is tried again: longer than
/// the library's 2 s negative cache of ids found missing, and than any background
/// write the loops left behind takes on an idle machine.
const SETTLE: Duration = Duration::from_millis(2500);

const OWNER: &str = "owner";

/// The thief's loops on each server.
const THIEF_LOOPS: [(&str, &str); 4] = [
    ("GET", "/cart"),
    ("POST", "/cart/items?sku=a&qty=1"),
    ("GET", "/cart"),
    ("POST", "/cart/items?sku=a&qty=1"),
];

#[derive(Default)]
struct Findings {
    /// Rounds in which the stolen cookie loaded the session again after the logout.
    resurrected_rounds: usize,
    resurrected: Vec<String>,
    /// Thief answers with a status other than 200, 409, 503, a 200 that is not the
    /// cart JSON, no answer at all, or a check that was not answered 200.
    broken: Vec<String>,
    /// The owner's logout failed or did not clear the cookie.
    owner: Vec<String>,
    thief_answers: usize,
}

/// What the delayed check of one round found.
struct Checked {
    resurrected: Vec<String>,
    broken: Vec<String>,
}

/// Runs `ROUNDS` logouts under a stolen cookie and asserts that none comes undone.
pub async fn steal(setting: Setting) {
    let started = Instant::now();
    let pair = Pair::start(setting).await;
    let mut findings = Findings::default();
    let mut checks = Vec::new();
    for number in 1..=ROUNDS {
        checks.push(round(&pair, number, &mut findings).await);
    }
    for check in checks {
        let checked = check.await.expect("a check panicked");
        if !checked.resurrected.is_empty() {
            findings.resurrected_rounds += 1;
        }
        findings.resurrected.extend(checked.resurrected);
        findings.broken.extend(checked.broken);
    }
    let sample = |list: &[String]| list.iter().take(6).cloned().collect::<Vec<_>>();
    let report = format!(
        "logout under a stolen cookie ({setting}): {} of {ROUNDS} sessions resurrected \
         {:?} after the thief stopped; {} thief answers, {} broken; {} owner failures \
         ({:?})\n  resurrected: {:#?}\n  broken: {:#?}\n  owner: {:#?}",
        findings.resurrected_rounds,
        SETTLE,
        findings.thief_answers,
        findings.broken.len(),
        findings.owner.len(),
        started.elapsed(),
        sample(&findings.resurrected),
        sample(&findings.broken),
        sample(&findings.owner),
    );
    println!("{report}");
    assert!(
        findings.resurrected_rounds == 0 && findings.broken.is_empty() && findings.owner.is_empty(),
        "{report}"
    );
}

/// One logout under attack; returns the check that runs `SETTLE` after the thief
/// stopped.
async fn round(pair: &Pair, number: usize, findings: &mut Findings) -> JoinHandle<Checked> {
    let [owners_server, _] = &pair.servers;
    let login = until_served(owners_server, "POST", &format!("/login?user={OWNER}"), None)
        .await
        .unwrap_or_else(|error| panic!("round {number}: the owner cannot log in: {error}"));
    let stolen = login.session_cookie().unwrap_or_else(|| {
        panic!(
            "round {number}: the login set no cookie: {}",
            login.describe()
        )
    });
    let filled = until_served(
        owners_server,
        "POST",
        "/cart/items?sku=a&qty=1",
        Some(&stolen),
    )
    .await
    .unwrap_or_else(|error| panic!("round {number}: the owner cannot fill the cart: {error}"));
    let json = filled.json().unwrap_or(Value::Null);
    assert!(
        json["items"] == json!({"a": 1}) && user_field(&json) == Some(OWNER),
        "round {number}: the owner's cart: {}",
        filled.describe()
    );

    let loops: Vec<(&Server, &'static str, &'static str)> = pair
        .servers
        .iter()
        .flat_map(|server| {
            THIEF_LOOPS
                .iter()
                .map(move |&(method, path)| (server, method, path))
        })
        .collect();
    let traffic = Traffic::start(&loops, &stolen);
    tokio::time::sleep(BEFORE_LOGOUT).await;
    let logout_sent = Instant::now();
    match until_served(owners_server, "POST", "/logout", Some(&stolen)).await {
        Ok(reply) if reply.clears_cookie() => {}
        Ok(reply) => findings.owner.push(format!(
            "round {number}: the logout did not clear the cookie: {}",
            reply.describe()
        )),
        Err(error) => findings
            .owner
            .push(format!("round {number}: the owner cannot log out: {error}")),
    }
    tokio::time::sleep(AFTER_LOGOUT).await;
    let seen = traffic.stop().await;
    let stopped = Instant::now();

    findings.thief_answers += seen.len();
    findings.broken.extend(
        seen.iter()
            .filter_map(|observation| broken(observation, logout_sent))
            .map(|line| format!("round {number}: {line}")),
    );

    let servers: Vec<(String, std::net::SocketAddr)> = pair
        .servers
        .iter()
        .map(|server| (server.name.clone(), server.address))
        .collect();
    tokio::spawn(async move {
        tokio::time::sleep_until((stopped + SETTLE).into()).await;
        let mut checked = Checked {
            resurrected: Vec::new(),
            broken: Vec::new(),
        };
        for (name, address) in servers {
            let context = format!("round {number}: [{name} GET /cart with the stolen cookie]");
            match Client::new(address)
                .send("GET", "/cart", Some(&stolen))
                .await
            {
                Ok(reply) if reply.status == 200 => {
                    let json = reply.json().unwrap_or(Value::Null);
                    if json["user"] != Value::Null || json["items"] != json!({}) {
                        checked
                            .resurrected
                            .push(format!("{context} {}", reply.describe()));
                    }
                }
                Ok(reply) => checked
                    .broken
                    .push(format!("{context} {}", reply.describe())),
                Err(error) => checked.broken.push(format!("{context} {error}")),
            }
        }
        checked
    })
}

/// Why a thief's answer is a bug in itself, if it is.
fn broken(observation: &Observation, logout_sent: Instant) -> Option<String> {
    let line = observation.describe(logout_sent);
    match &observation.result {
        Err(_) => Some(line),
        Ok(reply) if !acceptable(reply.status) => Some(line),
        Ok(reply)
            if reply.status == 200
                && reply.json().is_none_or(|json| json.get("items").is_none()) =>
        {
            Some(format!("not the cart: {line}"))
        }
        Ok(_) => None,
    }
}

/// Sticky mode (routes `a1`, `a2`), `--concurrency merge`: the owner's server ends
/// the session while the other server takes it over for the thief; neither brings it
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_merge_logout_sticks_under_a_stolen_cookie() {
    steal(Setting {
        mode: "sticky",
        concurrency: "merge",
        servers: AXUM_PAIR,
    })
    .await;
}

/// Sticky mode, `--concurrency lock`: as with merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_lock_logout_sticks_under_a_stolen_cookie() {
    steal(Setting {
        mode: "sticky",
        concurrency: "lock",
        servers: MIXED_PAIR,
    })
    .await;
}

/// Sticky mode, `--concurrency none` (last writer wins): as with merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_none_logout_sticks_under_a_stolen_cookie() {
    steal(Setting {
        mode: "sticky",
        concurrency: "none",
        servers: MIXED_PAIR_REVERSED,
    })
    .await;
}

/// Non-sticky mode, `--concurrency merge`: requests that read the session before the
/// logout deleted both memcached copies must not write either back when they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_sticky_merge_logout_sticks_under_a_stolen_cookie() {
    steal(Setting {
        mode: "non-sticky",
        concurrency: "merge",
        servers: AXUM_PAIR,
    })
    .await;
}

/// Non-sticky mode, `--concurrency lock`: as with merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_sticky_lock_logout_sticks_under_a_stolen_cookie() {
    steal(Setting {
        mode: "non-sticky",
        concurrency: "lock",
        servers: MIXED_PAIR,
    })
    .await;
}

/// Non-sticky mode, `--concurrency none`: as with merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_sticky_none_logout_sticks_under_a_stolen_cookie() {
    steal(Setting {
        mode: "non-sticky",
        concurrency: "none",
        servers: MIXED_PAIR_REVERSED,
    })
    .await;
}
