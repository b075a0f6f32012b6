//! What reaches memcached: codecs, rolling codec migration and stored-bytes layers,
//! through real memcached processes.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use speedy::{Readable, Writable};
use tandem::codec::{Compression, Encryption, EncryptionKey};
use tandem::{
    CookieUpdate, JsonCodec, RemoteStore, SessionId, SessionManager, SpeedyCodec,
    codec::{Migrating, MsgpackCodec},
    envelope,
    model::{CodecId, KeySpace},
};
use tandem_testkit::MemcachedCluster;

use common::{connect, key, node, settle};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Readable, Writable)]
struct Profile {
    name: String,
    bio: String,
}

fn profile() -> Profile {
    Profile {
        name: "ann".into(),
        bio: "a long biography that compresses well. ".repeat(60),
    }
}

async fn stored_bytes(store: &Arc<tandem::memcached::MemcachedStore>, id: &SessionId) -> Vec<u8> {
    store
        .get(&node(id.node()), &key(KeySpace::Session, id))
        .await
        .unwrap()
        .unwrap()
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reads_sessions_written_by_each_of_its_reader_codecs_and_rewrites_them() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let shared = || Arc::clone(&store) as Arc<dyn RemoteStore>;

    async fn write<C>(manager: &SessionManager<C>) -> SessionId
    where
        C: tandem::Codec + tandem::model::Encodes<Profile>,
    {
        let mut session = manager.load(None).await.unwrap();
        session.insert("profile", &profile()).unwrap();
        let CookieUpdate::Set { id, .. } = manager.commit(session).await.unwrap().cookie else {
            unreachable!("a new session sets its cookie")
        };
        manager.shutdown(std::time::Duration::from_secs(2)).await;
        id
    }
    let json_id = write(
        &SessionManager::<JsonCodec>::builder(shared())
            .build()
            .unwrap(),
    )
    .await;
    let msgpack_id = write(
        &SessionManager::<MsgpackCodec>::builder(shared())
            .build()
            .unwrap(),
    )
    .await;

    type Reader = Migrating<SpeedyCodec, (JsonCodec, MsgpackCodec)>;
    let migrating = SessionManager::<Reader>::builder(shared()).build().unwrap();
    for id in [&json_id, &msgpack_id] {
        let mut session = migrating.load(Some(id.as_str())).await.unwrap();
        assert!(!session.is_new(), "{id} not read");
        assert_eq!(session.get::<Profile>("profile").unwrap(), Some(profile()));
        session.insert("visits", &1u32).unwrap();
        migrating.commit(session).await.unwrap();
    }
    settle(&migrating).await;
    // Rewritten on change: the envelope now says speedy; untouched attributes keep
    // the codec that wrote them until they change.
    let header = envelope::header(&stored_bytes(&store, &json_id).await).unwrap();
    assert_eq!(header.codec, CodecId::SPEEDY);

    // A plain JSON server cannot read a speedy session: a counted fresh session.
    let json_only = SessionManager::<JsonCodec>::builder(shared())
        .build()
        .unwrap();
    assert!(
        json_only
            .load(Some(json_id.as_str()))
            .await
            .unwrap()
            .is_new()
    );
    assert_eq!(json_only.stats().undecodable, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_and_encrypted_sessions_round_trip_and_are_opaque_in_memcached() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let key = EncryptionKey::generate(1);
    let layered = || (Compression::lz4(), Encryption::new(key.clone()));
    let writer = SessionManager::<SpeedyCodec>::builder(Arc::clone(&store) as Arc<dyn RemoteStore>)
        .layer(layered())
        .build()
        .unwrap();
    let mut session = writer.load(None).await.unwrap();
    session.insert("profile", &profile()).unwrap();
    let CookieUpdate::Set { id, .. } = writer.commit(session).await.unwrap().cookie else {
        unreachable!()
    };
    writer.shutdown(std::time::Duration::from_secs(2)).await;

    let bytes = stored_bytes(&store, &id).await;
    let plain = profile().bio;
    assert!(
        !bytes
            .windows(20)
            .any(|window| plain.as_bytes().starts_with(window)),
        "memcached holds readable session data"
    );
    let stats = writer.layer_stats();
    assert!(stats.ratio().unwrap() < 0.5, "{stats:?}");

    let reader = SessionManager::<SpeedyCodec>::builder(Arc::clone(&store) as Arc<dyn RemoteStore>)
        .layer(layered())
        .build()
        .unwrap();
    let session = reader.load(Some(id.as_str())).await.unwrap();
    assert_eq!(session.get::<Profile>("profile").unwrap(), Some(profile()));

    // A server with another key cannot read it: counted, fresh session.
    let stranger =
        SessionManager::<SpeedyCodec>::builder(Arc::clone(&store) as Arc<dyn RemoteStore>)
            .layer((
                Compression::lz4(),
                Encryption::new(EncryptionKey::generate(2)),
            ))
            .build()
            .unwrap();
    assert!(stranger.load(Some(id.as_str())).await.unwrap().is_new());
    assert_eq!(stranger.stats().undecodable, 1);
    assert_eq!(stranger.layer_stats().rejected, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_over_memcacheds_item_limit_fails_its_commit_and_the_stored_copy_stays() {
    let cluster = MemcachedCluster::start(1);
    let store = connect(&cluster).await;
    let manager =
        SessionManager::<SpeedyCodec>::builder(Arc::clone(&store) as Arc<dyn RemoteStore>)
            .build()
            .unwrap();
    let mut session = manager.load(None).await.unwrap();
    session.insert("profile", &profile()).unwrap();
    let CookieUpdate::Set { id, .. } = manager.commit(session).await.unwrap().cookie else {
        unreachable!()
    };
    settle(&manager).await;
    let before = stored_bytes(&store, &id).await;

    let mut session = manager.load(Some(id.as_str())).await.unwrap();
    session.insert("upload", &vec![7u8; 1024 * 1024]).unwrap();
    let error = manager.commit(session).await.unwrap_err();
    assert!(
        matches!(error, tandem::CommitError::TooLarge { .. }),
        "{error:?}"
    );
    assert_eq!(manager.stats().too_large, 1);
    settle(&manager).await;
    assert_eq!(stored_bytes(&store, &id).await, before);
    let session = manager.load(Some(id.as_str())).await.unwrap();
    assert!(!session.contains("upload"));
    assert_eq!(session.get::<Profile>("profile").unwrap(), Some(profile()));
}
