use super::*;

const SECRET: &str = "s3cr3t-Pa55";

#[test]
fn parses_named_nodes_and_every_scheme() {
    let spec = RedisSpec::parse(
        "r1=redis://127.0.0.1:6379, r2=rediss://cache.internal:6380/2,\
         v1=valkey://[::1]:7000,v2=valkeys://Example.COM",
    )
    .unwrap();
    assert_eq!(
        spec.ids().iter().map(NodeId::as_str).collect::<Vec<_>>(),
        ["r1", "r2", "v1", "v2"]
    );
    let [r1, r2, v1, v2] = [0, 1, 2, 3].map(|index| spec.nodes()[index].url());
    assert_eq!(
        (r1.host(), r1.port(), r1.db(), r1.tls()),
        ("127.0.0.1", 6379, 0, false)
    );
    assert_eq!(
        (r2.host(), r2.port(), r2.db(), r2.tls()),
        ("cache.internal", 6380, 2, true)
    );
    assert_eq!(
        (v1.host(), v1.bare_host(), v1.port()),
        ("[::1]", "::1", 7000)
    );
    assert_eq!(
        (v2.host(), v2.port(), v2.tls()),
        ("example.com", DEFAULT_PORT, true)
    );
    assert_eq!(
        spec.to_string(),
        "r1=redis://127.0.0.1:6379,r2=rediss://cache.internal:6380/2,\
         v1=valkey://[::1]:7000,v2=valkeys://example.com:6379"
    );
    assert_eq!(
        spec.node("r2").unwrap().url().address(),
        "cache.internal:6380"
    );
    assert!(spec.node("r9").is_none());
}

#[test]
fn sentinel_and_cluster_urls_name_several_hosts() {
    let spec = RedisSpec::parse(
        "r1=redis+sentinel://app:pw@s1:26379, s2 ,[::1]:26380/mymaster/3,\
         r2=rediss+cluster://c1:7000,c2:7001,\
         r3=valkey+sentinel://v1/vs,r4=valkeys+cluster://k1,r5=redis://plain",
    )
    .unwrap();
    let urls: Vec<&RedisUrl> = spec.nodes().iter().map(RedisNode::url).collect();
    assert_eq!(urls.len(), 5);
    assert_eq!(
        urls[0].topology(),
        &Topology::Sentinel {
            service: "mymaster".into()
        }
    );
    assert_eq!(urls[0].addresses(), ["s1:26379", "s2:26379", "[::1]:26380"]);
    assert_eq!(
        urls[0].socket_addresses()[2],
        ("::1".to_owned(), DEFAULT_SENTINEL_PORT + 1)
    );
    assert_eq!(
        (urls[0].db(), urls[0].tls(), urls[0].username()),
        (3, false, Some("app"))
    );
    assert_eq!(
        (urls[1].topology(), urls[1].tls()),
        (&Topology::Cluster, true)
    );
    assert_eq!(urls[1].addresses(), ["c1:7000", "c2:7001"]);
    assert_eq!(urls[2].port(), DEFAULT_SENTINEL_PORT);
    assert_eq!((urls[3].port(), urls[3].tls()), (DEFAULT_PORT, true));
    assert_eq!(urls[4].topology(), &Topology::Standalone);
    assert_eq!(
        spec.to_string(),
        "r1=redis+sentinel://app:***@s1:26379,s2:26379,[::1]:26380/mymaster/3,\
         r2=rediss+cluster://c1:7000,c2:7001,r3=valkey+sentinel://v1:26379/vs,\
         r4=valkeys+cluster://k1:6379,r5=redis://plain:6379"
    );
    // What it prints parses back to the same nodes (the password aside).
    let lone = RedisSpec::parse("redis+cluster://a:1,b:2").unwrap();
    assert_eq!(lone.nodes()[0].id().as_str(), "r1");
    assert_eq!(RedisSpec::parse(&lone.to_string()).unwrap(), lone);
}

#[test]
fn a_lone_url_is_node_r1() {
    let spec = RedisSpec::parse("  redis://localhost:6379/0 ").unwrap();
    assert_eq!(spec.nodes().len(), 1);
    assert_eq!(spec.nodes()[0].id().as_str(), "r1");
    assert_eq!(spec.to_string(), "r1=redis://localhost:6379");
    assert_eq!(
        "redis://h".parse::<RedisSpec>().unwrap().nodes()[0]
            .url()
            .port(),
        6379
    );
}

#[test]
fn credentials_are_decoded_and_kept_out_of_every_output() {
    let spec = RedisSpec::parse(&format!(
        "r1=redis://:{SECRET}@h1:1,r2=rediss://app%40eu:{SECRET}%2C%3A%40%2F%25@h2:2"
    ))
    .unwrap();
    let (r1, r2) = (spec.nodes()[0].url(), spec.nodes()[1].url());
    assert_eq!((r1.username(), r1.password()), (None, Some(SECRET)));
    assert_eq!(r2.username(), Some("app@eu"));
    assert_eq!(r2.password(), Some(&*format!("{SECRET},:@/%")));
    assert!(r1.has_password() && r2.has_password());
    let printed = [
        spec.to_string(),
        format!("{spec:?}"),
        format!("{r1} {r1:?} {r2} {r2:?}"),
        format!("{:?}", spec.nodes()),
    ];
    for text in &printed {
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("s3cr"), "{text}");
    }
    assert_eq!(r1.to_string(), "redis://:***@h1:1");
    assert_eq!(r2.to_string(), "rediss://app%40eu:***@h2:2");
    // What is printed parses back to the same server, user and database.
    let reparsed = RedisUrl::parse(&r2.to_string()).unwrap();
    assert_eq!(
        (reparsed.username(), reparsed.address()),
        (Some("app@eu"), r2.address())
    );
}

#[test]
fn errors_name_the_entry_and_say_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        (" ", "empty"),
        ("r1=redis://h:1,,r2=redis://h:2", "entry 2"),
        ("localhost:6379", "not a URL"),
        ("r1=localhost:6379", "not a URL"),
        ("r1=http://h:1", "unknown scheme"),
        ("r1=unix:///tmp/redis.sock", "unix sockets"),
        ("r1=redis+unix:///tmp/redis.sock", "unix sockets"),
        ("r1=redis://h:0", "port"),
        ("r1=redis://h:65536", "port"),
        ("r1=redis://h:+1", "port"),
        ("r1=redis://h:06379", "port"),
        ("r1=redis://h:", "port"),
        ("r1=redis://:6379", "host"),
        ("r1=redis://bad host:6379", "host"),
        ("r1=redis://[zz]:6379", "host"),
        ("r1=redis://[::1:6379", "IPv6"),
        ("r1=redis://[::1]x", "after the IPv6"),
        ("r1=redis://h:1/x", "database"),
        ("r1=redis://h:1/-1", "database"),
        ("r1=redis://h:1/01", "database"),
        ("r1=redis://h:1/0/1", "database"),
        ("r1=redis://h:1?db=2", "query"),
        ("r1=redis://h:1#x", "fragment"),
        ("r1=redis://user@h:1", "user name without a password"),
        ("r1=redis://user:@h:1", "password is empty"),
        ("r1=redis://:%zz@h:1", "two hex digits"),
        ("r1=redis://:%4@h:1", "two hex digits"),
        ("r1=redis://:%ff@h:1", "UTF-8"),
        ("redis://h1:1,redis://h2:2", "has no node id"),
        ("r-1=redis://h:1", "node id must be"),
        ("=redis://h:1", "node id must be"),
        ("r1=redis://h:1,r1=redis://g:2", "\"r1\" appears twice"),
        ("r1=redis://h:1,r2=redis://h:1/3", "h:1 appears twice"),
        ("r1=redis://h:1,g:2", "several hosts"),
        ("r1=redis+sentinel://s:1", "master's name"),
        ("r1=redis+sentinel://s:1/", "service name"),
        ("r1=redis+sentinel://s:1/a b", "service name"),
        ("r1=redis+sentinel://s:1/svc/x", "database"),
        (
            "r1=redis+sentinel://s:1,s:1/svc",
            "appears twice in the URL",
        ),
        ("r1=redis+sentinel://s:1,,s:2/svc", "entry 2"),
        ("r1=redis+cluster://c:1/2", "only database 0"),
        ("r1=redis+cluster://c:1,c:0", "port"),
        ("r1=redis+shard://c:1", "unknown scheme"),
        ("r1=redis+cluster://c:1,r2=redis://c:1", "c:1 appears twice"),
    ];
    for (spec, expected) in cases {
        let message = RedisSpec::parse(spec).unwrap_err().to_string();
        assert!(message.contains(expected), "{spec:?}: {message}");
        assert!(!message.contains('\n'), "{spec:?}: {message}");
    }
    let error = RedisSpec::parse("r1=redis://h:1,r2=redis://h:99999").unwrap_err();
    assert!(
        error.to_string().contains("`r2=redis://h:99999`"),
        "{error}"
    );
}

#[test]
fn errors_never_show_the_password() {
    let bad = [
        format!("r1=redis://:{SECRET}@h:0"),
        format!("r1=redis://app:{SECRET}@h:1/x"),
        format!("r1=redis://app:{SECRET}@:1"),
        format!("r1=http://app:{SECRET}@h:1"),
        format!("r1=redis://app:{SECRET}@h:1?x"),
        format!("r-1=redis://:{SECRET}@h:1"),
        format!("redis://:{SECRET}@h:1,redis://:{SECRET}@g:1"),
        format!("r1=redis://:{SECRET}%zz@h:1"),
        format!("r1=redis://:{SECRET}@h@g:1/x"),
        format!("r1=:{SECRET}@h:1"),
        format!("r1=redis://a:{SECRET}@h:1,r2=redis://b:{SECRET}@h:1"),
    ];
    for spec in &bad {
        let error = RedisSpec::parse(spec).unwrap_err();
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(SECRET), "{spec}: {text}");
        }
    }
    let error = RedisUrl::parse(&format!("redis://app:{SECRET}@h:0")).unwrap_err();
    assert!(error.to_string().contains("redis://app:***@h:0"), "{error}");
}

#[test]
fn redaction_hides_everything_that_may_be_a_password() {
    assert_eq!(redact("r1=redis://h:1"), "r1=redis://h:1");
    assert_eq!(redact("r1=redis://u:p@h:1"), "r1=redis://u:***@h:1");
    assert_eq!(redact("r1=redis://p@h:1"), "r1=redis://***@h:1");
    assert_eq!(redact("r1=redis://u:p@x@h:1"), "r1=redis://u:***@h:1");
    assert_eq!(redact("u:p@h"), "u:***@h");
    assert_eq!(redact("r1=redis://:secret"), "r1=redis://:***");
    assert_eq!(redact("r1=redis://h:secret/1"), "r1=redis://h:***/1");
    assert_eq!(redact("r1=redis://h:6379/1"), "r1=redis://h:6379/1");
    assert_eq!(redact("r1=redis://[::1]:6379"), "r1=redis://[::1]:6379");
}

#[test]
fn arbitrary_specs_never_panic_or_leak() {
    // A small deterministic fuzz: every prefix and suffix of awkward specs.
    let samples = [
        format!("r1=rediss://u%2:{SECRET}@[::1]:6379/15,r2=valkey://h"),
        format!("=:@/%[],redis://:{SECRET}@@::"),
        "r1=redis://h:1,,,=".to_owned(),
    ];
    for sample in &samples {
        for end in 0..=sample.len() {
            for start in 0..end.min(12) {
                let (Some(slice), true) = (sample.get(start..end), sample.is_char_boundary(end))
                else {
                    continue;
                };
                if let Err(error) = RedisSpec::parse(slice) {
                    let text = error.to_string();
                    assert!(!text.contains(SECRET), "{slice}: {text}");
                }
            }
        }
    }
}
