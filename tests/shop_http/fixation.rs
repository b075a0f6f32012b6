//! Session fixation: `POST /login` cycles the session id (`cycle_id`), and that must
//! cut off whoever planted the old id, also while the planter's requests with the old
//! id are in flight at the login, on the victim's server or the other one.
//!
//! The attack: the attacker gets a session X of its own, plants X in the victim's
//! browser, and keeps `GET /cart` requests with X running (12 loops) while the victim
//! logs in with X (`POST /login?user=victim`, answered with the new id Y). No attacker
//! answer, whenever its request was sent, may carry Y (in `Set-Cookie` or the JSON
//! `session` field) or the victim's user; after the login, X loads as no session with
//! a user on either server.
//!
//! In sticky mode X carries the victim's route (`a1`), so the attack lands on the
//! victim's server; a quarter of the attacker's loops go to the other server (`a2`),
//! which takes the session over from memcached: the cross-server path. In non-sticky
//! mode the loops are split evenly between the two servers.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{Client, Reply};
use crate::harness::{
    AXUM_PAIR, MIXED_PAIR, MIXED_PAIR_REVERSED, Observation, Pair, Server, Setting, Traffic,
    acceptable, random_part, session_field, until_served, user_field,
};

/// Attacks per test, each on a session of its own: a race that one round misses,
/// another hits.
const ROUNDS: usize = 20;
/// The attacker's concurrent `GET /cart` loops.
const ATTACKER_LOOPS: usize = 12;
/// How long the loops run before the victim logs in, and after the login answered:
/// both long against one request (a few milliseconds), so requests are in flight
/// across the login and come after it.
const BEFORE_LOGIN: Duration = Duration::from_millis(100);
const AFTER_LOGIN: Duration = Duration::from_millis(200);

const VICTIM: &str = "victim";

/// What the attacks of one test found.
#[derive(Default)]
struct Findings {
    /// Attacker answers to requests sent before the victim's login was answered
    /// (including those in flight at the login) that carried the victim's session.
    leaked_in_flight: Vec<String>,
    /// The same for requests sent after the login was answered.
    leaked_after: Vec<String>,
    /// After the login, `GET /cart` with X answered the victim's session or user.
    leaked_after_login_checks: Vec<String>,
    /// Attacker answers with a status other than 200, 409, 503, a 200 that is not the
    /// cart JSON, or no answer at all (connection dropped, timeout).
    broken: Vec<String>,
    /// The victim could not log in, or the new id does not hold the login.
    victim: Vec<String>,
    attacker_answers: usize,
}

impl Findings {
    fn leaks(&self) -> usize {
        self.leaked_in_flight.len() + self.leaked_after.len() + self.leaked_after_login_checks.len()
    }

    fn report(&self, setting: Setting, elapsed: Duration) -> String {
        let sample = |list: &[String]| list.iter().take(5).cloned().collect::<Vec<_>>();
        format!(
            "session fixation ({setting}), {ROUNDS} rounds, {} attacker answers: \
             {} violations ({} answers to requests in flight at or sent before the login, \
             {} sent after it, {} post-login GET /cart checks); {} broken answers; \
             {} victim failures ({elapsed:?})\n  in flight: {:#?}\n  after: {:#?}\n  \
             checks: {:#?}\n  broken: {:#?}\n  victim: {:#?}",
            self.attacker_answers,
            self.leaks(),
            self.leaked_in_flight.len(),
            self.leaked_after.len(),
            self.leaked_after_login_checks.len(),
            self.broken.len(),
            self.victim.len(),
            sample(&self.leaked_in_flight),
            sample(&self.leaked_after),
            sample(&self.leaked_after_login_checks),
            sample(&self.broken),
            sample(&self.victim),
        )
    }
}

/// Runs the attack `ROUNDS` times over two servers and asserts that it never works.
pub async fn attack(setting: Setting) {
    let started = Instant::now();
    let pair = Pair::start(setting).await;
    let mut findings = Findings::default();
    for _ in 0..ROUNDS {
        round(setting, &pair, &mut findings).await;
    }
    let report = findings.report(setting, started.elapsed());
    println!("{report}");
    assert!(
        findings.leaks() == 0 && findings.broken.is_empty() && findings.victim.is_empty(),
        "{report}"
    );
}

/// One attack, with a session planted for it; what it finds goes into `findings`.
async fn round(setting: Setting, pair: &Pair, findings: &mut Findings) {
    let [victims_server, other] = &pair.servers;
    // The attacker's own session, from the server the victim will use: in sticky mode
    // its id carries the victim's route.
    let planted =
        match until_served(victims_server, "POST", "/cart/items?sku=bait&qty=1", None).await {
            Ok(reply) => match reply.session_cookie() {
                Some(id) => id,
                None => panic!("a new session without a cookie: {}", reply.describe()),
            },
            Err(error) => panic!("the attacker cannot get a session: {error}"),
        };

    let loops: Vec<(&Server, &'static str, &'static str)> = (0..ATTACKER_LOOPS)
        .map(|index| {
            let to_other = if setting.sticky() {
                index % 4 == 3
            } else {
                index % 2 == 1
            };
            let server = if to_other { other } else { victims_server };
            (server, "GET", "/cart")
        })
        .collect();
    let traffic = Traffic::start(&loops, &planted);
    tokio::time::sleep(BEFORE_LOGIN).await;

    let login_sent = Instant::now();
    let login = until_served(
        victims_server,
        "POST",
        &format!("/login?user={VICTIM}"),
        Some(&planted),
    )
    .await;
    let login_answered = Instant::now();
    tokio::time::sleep(AFTER_LOGIN).await;
    let seen = traffic.stop().await;

    // Y: the victim's new id. Without it, only the user can tell a leak.
    let new_id = match &login {
        Ok(reply) => victim_logged_in(reply, &planted, findings),
        Err(error) => {
            findings
                .victim
                .push(format!("the victim could not log in: {error}"));
            None
        }
    };
    findings.attacker_answers += seen.len();
    for observation in &seen {
        let Some((leak, line)) =
            check_attacker_answer(observation, new_id.as_deref(), login_answered, login_sent)
        else {
            continue;
        };
        match leak {
            Leak::InFlight => findings.leaked_in_flight.push(line),
            Leak::After => findings.leaked_after.push(line),
            Leak::Broken => findings.broken.push(line),
        }
    }

    // After the login, the planted id is worth nothing on either server.
    for server in &pair.servers {
        let mut client = Client::new(server.address);
        match client.send("GET", "/cart", Some(&planted)).await {
            Ok(reply) if reply.status == 200 => {
                if let Some(leak) = leaks_victim(&reply, new_id.as_deref()) {
                    findings.leaked_after_login_checks.push(format!(
                        "[{} GET /cart with X after the login] {leak}: {}",
                        server.name,
                        reply.describe()
                    ));
                }
            }
            Ok(reply) => findings.broken.push(format!(
                "[{} GET /cart with X after the login] {}",
                server.name,
                reply.describe()
            )),
            Err(error) => findings.broken.push(error),
        }
    }

    // The victim's side: the new id holds the login on the victim's server.
    if let Some(new_id) = &new_id {
        let mut client = Client::new(victims_server.address);
        match client.send("GET", "/cart", Some(new_id)).await {
            Ok(reply)
                if reply.status == 200
                    && reply.json().as_ref().and_then(user_field) == Some(VICTIM) => {}
            Ok(reply) => findings.victim.push(format!(
                "GET /cart with the new id on {}: {}",
                victims_server.name,
                reply.describe()
            )),
            Err(error) => findings.victim.push(error),
        }
    }
}

/// Checks the victim's login answer; returns the new id.
fn victim_logged_in(reply: &Reply, planted: &str, findings: &mut Findings) -> Option<String> {
    let Some(new_id) = reply.session_cookie() else {
        findings.victim.push(format!(
            "the login set no new session cookie: {}",
            reply.describe()
        ));
        return None;
    };
    if random_part(&new_id) == random_part(planted) {
        findings.victim.push(format!(
            "the login kept the planted id {planted}: {}",
            reply.describe()
        ));
        return None;
    }
    if reply.json().as_ref().and_then(user_field) != Some(VICTIM) {
        findings.victim.push(format!(
            "the login answered another user: {}",
            reply.describe()
        ));
    }
    Some(new_id)
}

enum Leak {
    InFlight,
    After,
    Broken,
}

fn check_attacker_answer(
    observation: &Observation,
    new_id: Option<&str>,
    login_answered: Instant,
    login_sent: Instant,
) -> Option<(Leak, String)> {
    let line = observation.describe(login_sent);
    let reply = match &observation.result {
        Ok(reply) => reply,
        Err(_) => return Some((Leak::Broken, line)),
    };
    if !acceptable(reply.status) {
        return Some((Leak::Broken, line));
    }
    if reply.status == 200 && reply.json().is_none_or(|json| json.get("items").is_none()) {
        return Some((Leak::Broken, format!("not the cart: {line}")));
    }
    let leak = leaks_victim(reply, new_id)?;
    let when = if observation.sent < login_answered {
        Leak::InFlight
    } else {
        Leak::After
    };
    Some((when, format!("{leak}: {line}")))
}

/// What of the victim's session an answer to the attacker carries, if anything.
fn leaks_victim(reply: &Reply, new_id: Option<&str>) -> Option<&'static str> {
    let json = reply.json().unwrap_or(json!(null));
    if let Some(new_id) = new_id {
        let victims = random_part(new_id);
        if reply
            .session_cookies()
            .iter()
            .any(|value| random_part(value) == victims)
        {
            return Some("Set-Cookie with the victim's new id");
        }
        if session_field(&json).is_some_and(|id| random_part(id) == victims) {
            return Some("the victim's new id in the JSON session field");
        }
    }
    if user_field(&json) == Some(VICTIM) {
        return Some("the victim's user");
    }
    None
}

/// Sticky mode (routes `a1`, `a2`), `--concurrency merge`: no attacker request with
/// the planted id, on the victim's server or on the one that takes the session over,
/// gets the victim's new id or user.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_merge_login_cuts_off_the_planted_id() {
    attack(Setting {
        mode: "sticky",
        concurrency: "merge",
        servers: AXUM_PAIR,
    })
    .await;
}

/// Sticky mode, `--concurrency lock`: as with merge; the session lock serializes the
/// victim's login with the attacker's requests on its server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_lock_login_cuts_off_the_planted_id() {
    attack(Setting {
        mode: "sticky",
        concurrency: "lock",
        servers: MIXED_PAIR,
    })
    .await;
}

/// Sticky mode, `--concurrency none` (last writer wins): as with merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_none_login_cuts_off_the_planted_id() {
    attack(Setting {
        mode: "sticky",
        concurrency: "none",
        servers: MIXED_PAIR_REVERSED,
    })
    .await;
}

/// Non-sticky mode, `--concurrency merge`: the attacker's requests share the
/// session's transit copy with the victim's login on the victim's server, and read
/// memcached on the other; neither may hand out the cycled id or the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_sticky_merge_login_cuts_off_the_planted_id() {
    attack(Setting {
        mode: "non-sticky",
        concurrency: "merge",
        servers: AXUM_PAIR,
    })
    .await;
}

/// Non-sticky mode, `--concurrency lock`: as with merge, with the session lock (in
/// this process and in memcached) between the requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_sticky_lock_login_cuts_off_the_planted_id() {
    attack(Setting {
        mode: "non-sticky",
        concurrency: "lock",
        servers: MIXED_PAIR,
    })
    .await;
}

/// Non-sticky mode, `--concurrency none`: as with merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_sticky_none_login_cuts_off_the_planted_id() {
    attack(Setting {
        mode: "non-sticky",
        concurrency: "none",
        servers: MIXED_PAIR_REVERSED,
    })
    .await;
}
