//! Cross-codec reads and layered bytes through a real memcached: what one release
//! stores, the next one (another codec, layers turned on) loads.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use speedy::{Readable, Writable};
use tandem_codec::{
    Compression, Encryption, EncryptionKey, JsonCodec, Migrating, MsgpackCodec, PostcardCodec,
    SpeedyCodec,
};
use tandem_core::layers::{BlobLayer, NoLayer};
use tandem_core::{
    Codec, CodecId, Encodes, EnvelopeError, KeyPrefix, KeySpace, LayerError, NodeId, NodeSpec,
    RemoteStore, Session, SessionId, Ttl, envelope,
};
use tandem_memcached::{MemcachedConfig, MemcachedStore};
use tandem_testkit::MemcachedProcess;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Readable, Writable)]
struct Cart {
    lines: Vec<(String, u32)>,
}

fn cart() -> Cart {
    Cart {
        lines: (0..100).map(|i| (format!("SKU-{i:05}"), i)).collect(),
    }
}

struct Fixture {
    _memcached: MemcachedProcess,
    store: MemcachedStore,
    node: NodeId,
    prefix: KeyPrefix,
}

impl Fixture {
    async fn start() -> Fixture {
        let memcached = MemcachedProcess::start();
        let spec = NodeSpec::parse(&format!("n1:{}", memcached.address())).unwrap();
        let store = MemcachedStore::connect(
            &spec,
            MemcachedConfig::default().with_operation_timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap();
        Fixture {
            _memcached: memcached,
            store,
            node: NodeId::new("n1").unwrap(),
            prefix: KeyPrefix::new("codec-test:").unwrap(),
        }
    }

    /// Stores a session with a cart and a counter, written by codec `C` and sealed by
    /// `layer`, as a release running `C` would.
    async fn put<C>(&self, layer: &dyn BlobLayer) -> SessionId
    where
        C: Codec + Encodes<Cart> + Encodes<u64>,
    {
        let id = SessionId::generate(&self.node, None);
        let mut session: Session<C> =
            Session::new(id.clone(), SystemTime::now(), Some(Duration::from_secs(60)));
        session.insert("cart", &cart()).unwrap();
        session.insert("visits", &5u64).unwrap();
        let sealed = layer.seal(&id, envelope::encode(&session)).unwrap();
        let key = self.prefix.key(KeySpace::Session, &id);
        self.store
            .set(
                &self.node,
                &key,
                &sealed,
                Ttl::from_max_inactive(session.max_inactive()),
            )
            .await
            .unwrap();
        id
    }

    /// The stored bytes of `id`, opened by `layer`.
    async fn get(&self, id: &SessionId, layer: &dyn BlobLayer) -> Result<Vec<u8>, LayerError> {
        let key = self.prefix.key(KeySpace::Session, id);
        let item = self.store.get(&self.node, &key).await.unwrap().unwrap();
        layer
            .open(id, &item.value)
            .map(|opened| opened.into_owned())
    }
}

type Reader = Migrating<SpeedyCodec, (JsonCodec, MsgpackCodec)>;

#[tokio::test]
async fn sessions_of_every_listed_codec_load_through_memcached() {
    let memcached = Fixture::start().await;
    let ids = [
        memcached.put::<SpeedyCodec>(&NoLayer).await,
        memcached.put::<JsonCodec>(&NoLayer).await,
        memcached.put::<MsgpackCodec>(&NoLayer).await,
        memcached.put::<Reader>(&NoLayer).await,
    ];
    for id in ids {
        let bytes = memcached.get(&id, &NoLayer).await.unwrap();
        let session: Session<Reader> = envelope::decode(id, &bytes).unwrap();
        assert_eq!(session.get::<Cart>("cart").unwrap(), Some(cart()));
        assert_eq!(session.get::<u64>("visits").unwrap(), Some(5));
    }

    // Written by a codec the reader does not list: a typed mismatch, not garbage.
    let id = memcached.put::<PostcardCodec>(&NoLayer).await;
    let bytes = memcached.get(&id, &NoLayer).await.unwrap();
    assert_eq!(
        envelope::decode::<Reader>(id, &bytes).unwrap_err(),
        EnvelopeError::CodecMismatch {
            written_by: CodecId::POSTCARD,
            reader: CodecId::SPEEDY
        }
    );
}

#[tokio::test]
async fn layers_turned_on_later_still_load_what_was_stored_before() {
    let memcached = Fixture::start().await;
    let key = EncryptionKey::generate(1);
    let layered = (Compression::lz4(), Encryption::new(key.clone()));

    // Stored by the release before layers were on, and by the release after.
    let before = memcached.put::<JsonCodec>(&NoLayer).await;
    let after = memcached.put::<SpeedyCodec>(&layered).await;

    for id in [before, after.clone()] {
        let bytes = memcached.get(&id, &layered).await.unwrap();
        let session: Session<Reader> = envelope::decode(id, &bytes).unwrap();
        assert_eq!(session.get::<Cart>("cart").unwrap(), Some(cart()));
    }
    let stats = layered.1.encryption_stats();
    assert_eq!((stats.plaintext_passed, stats.decrypted), (1, 1));
    assert!(layered.0.compression_stats().layer.ratio().unwrap() < 0.6);

    // A server without the key gets a typed refusal, not a misread session.
    let other = Encryption::new(EncryptionKey::generate(1));
    assert_eq!(
        memcached.get(&after, &other).await.unwrap_err(),
        LayerError::Tampered { key_id: 1 }
    );
}
