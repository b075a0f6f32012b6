//! The foundation end to end: create a session, store it on the node its id names,
//! load it back as another app server would, change one attribute and write it back
//! with compare-and-swap.
//!
//! ```sh
//! cargo run --example basic                                   # in-process store
//! cargo run --example basic -- --memcached n1:127.0.0.1:11211 # real memcached
//! ```

use std::error::Error;
use std::time::{Duration, SystemTime};

use speedy::{Readable, Writable};
use tandem::memcached::{MemcachedConfig, MemcachedStore};
use tandem::{
    CasOutcome, KeyPrefix, KeySpace, MemoryStore, NodeSpec, RemoteStore, Session, SessionId,
    SpeedyCodec, Ttl, envelope,
};

#[derive(Debug, Clone, PartialEq, Readable, Writable)]
struct CartLine {
    sku: String,
    quantity: u32,
}

fn usage() -> ! {
    eprintln!("usage: basic [--memcached NODESPEC]   (NODESPEC: n1:host:port[,n2:host:port...])");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let memcached = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--memcached"), Some(spec)) => Some(spec),
        _ => usage(),
    };

    let (spec, store): (NodeSpec, Box<dyn RemoteStore>) = match memcached {
        Some(text) => {
            let spec = NodeSpec::parse(&text)?;
            let store = MemcachedStore::connect(&spec, MemcachedConfig::default()).await?;
            println!("remote tier: memcached {spec}");
            (spec, Box::new(store))
        }
        None => {
            let spec = NodeSpec::parse("n1:in-process:1,n2:in-process:2")?;
            println!(
                "remote tier: in-process memory store (pass --memcached NODESPEC for memcached)"
            );
            (spec.clone(), Box::new(MemoryStore::new(spec.ids())))
        }
    };
    let node = spec
        .nodes()
        .iter()
        .map(|node| node.id())
        .find(|id| store.is_available(id))
        .ok_or("no node is available")?;
    let prefix = KeyPrefix::new("basic:")?;

    // App server a1 creates a session on a live node and stores it there.
    let id = SessionId::generate(node, Some(&"a1".parse()?));
    let mut session: Session<SpeedyCodec> = Session::new(
        id.clone(),
        SystemTime::now(),
        Some(Duration::from_secs(1800)),
    );
    session.insert("user", "ann")?;
    session.insert(
        "cart",
        &vec![CartLine {
            sku: "apple".into(),
            quantity: 3,
        }],
    )?;
    let key = prefix.key(KeySpace::Session, &id);
    let ttl = Ttl::from_max_inactive(session.max_inactive());
    let bytes = envelope::encode(&session);
    store.set(node, &key, &bytes, ttl).await?;
    println!(
        "a1 created {id} and stored {} bytes under {key}",
        bytes.len()
    );

    // App server a2 receives the cookie. The id is parsed strictly before any network
    // call; the route is not part of the key, so a2 finds the same stored session.
    let incoming = SessionId::parse(id.as_str())?.with_route(Some(&"a2".parse()?));
    let item = store
        .get(node, &prefix.key(KeySpace::Session, &incoming))
        .await?
        .ok_or("session not found")?;
    let mut loaded: Session<SpeedyCodec> = envelope::decode(incoming.clone(), &item.value)?;
    let mut cart: Vec<CartLine> = loaded.get("cart")?.unwrap_or_default();
    println!(
        "a2 loaded {incoming}: user {:?}, cart {cart:?}",
        loaded.get::<String>("user")?
    );

    // a2 changes one attribute and writes back only if nobody else wrote meanwhile.
    cart[0].quantity += 1;
    loaded.insert("cart", &cart)?;
    let changed: Vec<&str> = loaded.changes().map(|change| change.name).collect();
    let outcome = store
        .cas(node, &key, &envelope::encode(&loaded), ttl, item.cas)
        .await?;
    println!("a2 changed {changed:?}; compare-and-swap: {outcome:?}");
    assert_eq!(outcome, CasOutcome::Stored);

    // A forged cookie never reaches the store.
    let forged = "../../etc/passwd\r\nflush_all";
    println!(
        "forged id {forged:?}: {}",
        SessionId::parse(forged).unwrap_err()
    );

    store.delete(node, &key).await?;
    Ok(())
}
