//! Sticky mode end to end with two app servers, `a1` and `a2`, sharing one remote tier:
//! a1 creates a cart session and serves it from its local tier (no network), backs it
//! up, shuts down gracefully; a2 then receives the client's cookie, takes the session
//! over from the remote tier and tells the client its new route.
//!
//! ```sh
//! cargo run --example basic                                   # in-process store
//! cargo run --example basic -- --memcached n1:127.0.0.1:11211 # real memcached
//! ```

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use speedy::{Readable, Writable};
use tandem::memcached::{MemcachedConfig, MemcachedStore};
use tandem::{
    CookieUpdate, MemoryStore, NodeSpec, RemoteStore, Route, SessionId, SessionManager, SpeedyCodec,
};

#[derive(Debug, Clone, PartialEq, Readable, Writable)]
struct CartLine {
    sku: String,
    quantity: u32,
}

type Manager = SessionManager<SpeedyCodec>;

fn usage() -> ! {
    eprintln!("usage: basic [--memcached NODESPEC]   (NODESPEC: n1:host:port[,n2:host:port...])");
    std::process::exit(2)
}

fn app_server(store: &Arc<dyn RemoteStore>, route: &str) -> Result<Manager, Box<dyn Error>> {
    Ok(Manager::builder(Arc::clone(store))
        .route(Route::new(route)?)
        .build()?)
}

/// What a web layer does with a commit's cookie update.
fn cookie(update: &CookieUpdate, current: Option<SessionId>) -> Option<SessionId> {
    match update {
        CookieUpdate::Keep => current,
        CookieUpdate::Set { id, .. } => Some(id.clone()),
        CookieUpdate::Clear => None,
    }
}

fn shown(cookie: &Option<SessionId>) -> &str {
    cookie.as_ref().map_or("(none)", SessionId::as_str)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let memcached = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--memcached"), Some(spec)) => Some(spec),
        _ => usage(),
    };
    let store: Arc<dyn RemoteStore> = match memcached {
        Some(text) => {
            let spec = NodeSpec::parse(&text)?;
            println!("remote tier: memcached {spec}");
            Arc::new(MemcachedStore::connect(&spec, MemcachedConfig::default()).await?)
        }
        None => {
            println!(
                "remote tier: in-process memory store (pass --memcached NODESPEC for memcached)"
            );
            Arc::new(MemoryStore::new(NodeSpec::parse("n1:in-process:1")?.ids()))
        }
    };

    // Request 1 on a1: no cookie yet; adding to the cart creates the session.
    let a1 = app_server(&store, "a1")?;
    let mut session = a1.load(None).await?;
    let cart = vec![CartLine {
        sku: "apple".into(),
        quantity: 3,
    }];
    session.insert("cart", &cart)?;
    let outcome = a1.commit(session).await?;
    let mut client = cookie(&outcome.cookie, None);
    println!(
        "a1 created the session; cookie {}, backup {:?}",
        shown(&client),
        outcome.backup
    );

    // Requests 2..=100 on a1: served from the local tier.
    for _ in 2..=100 {
        let session = a1.load(client.as_ref().map(SessionId::as_str)).await?;
        let cart: Vec<CartLine> = session.get("cart")?.unwrap_or_default();
        assert_eq!(cart.len(), 1);
        client = cookie(&a1.commit(session).await?.cookie, client);
    }
    let stats = a1.stats();
    println!(
        "a1 served {} requests from its local tier ({} backup written, {} pending)",
        stats.loaded_local,
        stats.backups_written,
        a1.pending_backups()
    );

    // a1 goes away (a rolling restart): pending backups are flushed first.
    let report = a1.shutdown(Duration::from_secs(5)).await;
    println!("a1 shut down: {report:?}");
    drop(a1);

    // The balancer sends the next request to a2, which takes the session over.
    let a2 = app_server(&store, "a2")?;
    let mut session = a2.load(client.as_ref().map(SessionId::as_str)).await?;
    let mut cart: Vec<CartLine> = session.get("cart")?.unwrap_or_default();
    println!("a2 loaded the cart from the remote tier: {cart:?}");
    cart.push(CartLine {
        sku: "pear".into(),
        quantity: 1,
    });
    session.insert("cart", &cart)?;
    let outcome = a2.commit(session).await?;
    client = cookie(&outcome.cookie, client);
    println!("a2 took the session over; new cookie {}", shown(&client));
    let stats = a2.stats();
    println!(
        "a2: {} taken over, {} loaded remotely",
        stats.taken_over, stats.loaded_remote
    );

    // A forged cookie is no session, and costs no remote operation.
    let forged = a2.load(Some("../../etc/passwd\r\nflush_all")).await?;
    println!("forged cookie -> new session: {}", forged.is_new());
    a2.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
