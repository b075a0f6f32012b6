//! The shops over Redis (`--redis`, `--tls-ca`): their contract is the same; what
//! differs is how the remote tier is named, secured and refused at startup. Each test
//! starts its Redis servers once and runs both shops over them.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tandem_testkit::{RedisOptions, RedisProcess, untrusted_ca};

use crate::shops::{Framework, Remote, Served};
use crate::{call, fill, options};

const BOTH: [Framework; 2] = [Framework::Axum, Framework::Actix];

/// The shop of `framework` for `args`, connected as the binary connects.
pub async fn shop_over(framework: Framework, args: &[&str]) -> Served {
    Served::over(framework, args, Remote::FromOptions).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cart_lives_in_redis_in_both_modes() {
    let redis = RedisProcess::start_with(RedisOptions::default().password("s3cret pass"));
    let url = redis.url();
    let runs = BOTH.into_iter().flat_map(|framework| {
        [("sticky", Some("a1")), ("non-sticky", None)].map(|(mode, route)| (framework, mode, route))
    });
    for (framework, mode, route) in runs {
        let mut args = vec!["--redis", url.as_str(), "--mode", mode];
        if let Some(route) = route {
            args.extend(["--route", route]);
        }
        let mode = format!("{framework}, {mode}");
        let shop = shop_over(framework, &args).await;
        let id = fill(&shop).await;
        assert!(id.contains("-r1"), "{mode}: the id names node r1: {id}");
        let reply = call(&shop, "POST", "/cart/items?sku=pear&qty=1", Some(&id)).await;
        assert_eq!(
            reply.json()["items"],
            json!({"apple": 2, "pear": 1}),
            "{mode}"
        );
        shop.flush(Duration::from_secs(5)).await;
        // The session is in Redis: a second server (non-sticky), or this one after a
        // restart (sticky), loads it from there.
        let again = shop_over(framework, &args).await;
        let reply = call(&again, "GET", "/cart", Some(&id)).await;
        assert_eq!(
            reply.json()["items"],
            json!({"apple": 2, "pear": 1}),
            "{mode}"
        );
        assert!(
            redis
                .keys()
                .iter()
                .any(|key| key.ends_with(id.split('.').next().unwrap())),
            "{mode}: {:?}",
            redis.keys()
        );
        let nodes = call(&again, "GET", "/admin/nodes", None).await;
        let text = nodes.body.to_string();
        assert!(text.contains("r1"), "{text}");
        assert!(
            !text.contains("s3cret"),
            "no password in /admin/nodes: {text}"
        );
    }
}

/// A wrong password and an untrusted certificate stop the shop at startup with one
/// line that names the node and not the password; the right CA lets it start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_refuses_wrong_credentials_and_untrusted_certificates() {
    let redis = RedisProcess::start_with(RedisOptions::default().password("right"));
    let wrong = redis.url().replace(":right@", ":wr0ng-secret@");
    let error =
        match Served::start(Framework::Axum, &["--redis", &wrong], Remote::FromOptions).await {
            Ok(_) => panic!("a wrong password must stop the shop"),
            Err(error) => error,
        };
    assert!(error.contains("r1"), "names the node: {error}");
    assert!(!error.contains("wr0ng-secret"), "no password: {error}");
    assert_eq!(error.lines().count(), 1, "{error}");

    let tls = RedisProcess::start_with(RedisOptions::default().tls());
    let files = tls.tls_files().expect("a TLS server's files");
    let untrusted = untrusted_ca();
    let ca = files.ca_cert.to_str().unwrap();
    let error = match Served::start(
        Framework::Actix,
        &[
            "--redis",
            &tls.url(),
            "--tls-ca",
            untrusted.to_str().unwrap(),
        ],
        Remote::FromOptions,
    )
    .await
    {
        Ok(_) => panic!("an untrusted certificate must stop the shop"),
        Err(error) => error,
    };
    assert!(error.contains("r1"), "names the node: {error}");
    assert_eq!(error.lines().count(), 1, "{error}");
    for framework in BOTH {
        let shop = shop_over(framework, &["--redis", &tls.url(), "--tls-ca", ca]).await;
        let id = fill(&shop).await;
        let reply = call(&shop, "GET", "/cart", Some(&id)).await;
        assert_eq!(reply.status, StatusCode::OK, "{framework}: {}", reply.body);
        assert_eq!(reply.json()["items"], json!({"apple": 2}), "{framework}");
    }
}

#[test]
fn the_redis_command_line() {
    let redis = options(&[
        "--redis",
        "r1=redis://app:pw@10.0.0.5:6379,r2=valkeys://10.0.0.6:6380/2",
        "--tls-ca",
        "/etc/ca.pem",
        "--failover-nodes",
        "r2",
    ]);
    assert_eq!(redis.memcached, None);
    assert_eq!(redis.tls_ca.as_deref(), Some("/etc/ca.pem"));
    for bad in [
        &[
            "--redis",
            "r1=redis://127.0.0.1:6379",
            "--memcached",
            "n1:127.0.0.1:11211",
        ][..],
        &["--tls-ca", "/etc/ca.pem"],
        &[
            "--tls-ca",
            "/etc/ca.pem",
            "--memcached",
            "n1:127.0.0.1:11211",
        ],
        &["--redis", "http://127.0.0.1:6379"],
        &["--redis", "r1=redis://:hunter2@127.0.0.1:notaport"],
    ] {
        let args = bad.iter().map(|arg| arg.to_string());
        let error = crate::options::Options::parse(args).expect_err(&format!("{bad:?}"));
        assert!(!error.contains("hunter2"), "no password in {error:?}");
    }
}
