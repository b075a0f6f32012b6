//! Tandem: a fault-tolerant, two-tier HTTP session manager for Rust application
//! servers.
//!
//! Each app server keeps sessions in a local tier and backs them up to a set of
//! memcached nodes (the remote tier). In *sticky* mode the local copy is the primary
//! and memcached holds a backup; in *non-sticky* mode memcached primary/backup node
//! pairs are the source of truth. Attribute values are encoded by a pluggable codec,
//! chosen by type: [`SpeedyCodec`] by default, [`JsonCodec`] beside it.
//!
//! This facade re-exports the workspace's crates, each as a namespace, and the names
//! most applications use at the top level:
//!
//! | namespace | crate | what it holds |
//! |---|---|---|
//! | [`manager`] | `tandem-manager` | the session manager: builder, modes, outcomes, errors, stats, clocks |
//! | [`model`] | `tandem-core` | sessions, ids, node specs, storage keys, the codec trait, the [`RemoteStore`] trait and [`MemoryStore`], the clock |
//! | [`envelope`], [`layers`] | `tandem-core` | the stored format, and the layers over stored bytes |
//! | [`codec`] | `tandem-codec` | the codecs, rolling migration, compression and encryption |
//! | [`memcached`] | `tandem-memcached` | the memcached store (feature `memcached`, default) |
//! | [`redis`] | `tandem-redis` | the Redis and Valkey store (feature `redis`, default) |
//! | [`tower`] | `tandem-tower` | the tower layer and axum extractor (feature `tower`, default) |
//! | `actix` | `tandem-actix` | the actix-web middleware and extractor (feature `actix`, off by default) |
//!
//! At the top level: [`SessionManager`] and what a request uses with it
//! ([`ManagerBuilder`], [`Mode`], [`Concurrency`], [`BackupMode`], [`RequestInfo`],
//! [`RequestSession`], [`CommitOutcome`], [`CookieUpdate`], [`BackupStatus`],
//! [`CommitError`], [`LoadError`]), the model's everyday types ([`Session`],
//! [`SessionId`], [`NodeId`], [`Route`], [`NodeSpec`], [`KeyPrefix`], [`KeySecret`],
//! [`Codec`], [`RemoteStore`], [`MemoryStore`]), and the default codec with its JSON
//! alternative. Everything else is in its namespace: `tandem::manager::Stats`,
//! `tandem::model::Ttl`, `tandem::codec::Encryption`.
//!
//! What it is not: code of its own. Each crate can be used alone (a store crate needs
//! only `tandem-core`); the facade saves naming them.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tandem::{envelope, NodeId, Session, SessionId, SpeedyCodec};
//!
//! let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
//! let mut session: Session<SpeedyCodec> =
//!     Session::new(id, SystemTime::now(), Some(Duration::from_secs(1800)));
//! session.insert("visits", &1u32).unwrap();
//!
//! let stored = envelope::encode(&session);
//! let loaded: Session<SpeedyCodec> = envelope::decode(session.id().clone(), &stored).unwrap();
//! assert_eq!(loaded.get::<u32>("visits").unwrap(), Some(1));
//! ```

pub use tandem_codec::{JsonCodec, SpeedyCodec};
pub use tandem_core::{
    Codec, KeyPrefix, KeySecret, MemoryStore, NodeId, NodeSpec, RemoteStore, Route, Session,
    SessionId,
};
pub use tandem_manager::{
    BackupMode, BackupStatus, CommitError, CommitOutcome, Concurrency, CookieUpdate, LoadError,
    ManagerBuilder, Mode, RequestInfo, RequestSession, SessionManager,
};

/// The codec sessions use unless another is chosen.
pub type DefaultCodec = SpeedyCodec;

/// The session manager (`tandem-manager`): its builder and settings, request outcomes,
/// errors, statistics, and the clock for tests on paused time.
pub use tandem_manager as manager;

/// The model (`tandem-core`): sessions and their attributes, ids and routes, node
/// specs, storage keys, the codec trait, the remote-store trait and the in-process
/// store, the clock.
pub use tandem_core as model;

/// The versioned binary format a session is stored in.
pub use tandem_core::envelope;

/// Layers over a session's stored bytes (the trait; compression and encryption are in
/// [`codec`]).
pub use tandem_core::layers;

/// Codecs, rolling codec migration and stored-bytes layers (compression, encryption).
pub use tandem_codec as codec;

/// The memcached remote store (feature `memcached`, on by default).
#[cfg(feature = "memcached")]
pub use tandem_memcached as memcached;

/// The Redis and Valkey remote store (feature `redis`, on by default).
#[cfg(feature = "redis")]
pub use tandem_redis as redis;

/// The web layer: a tower `Layer` and an axum extractor (feature `tower`, on by
/// default).
#[cfg(feature = "tower")]
pub use tandem_tower as tower;

/// The actix-web integration: a middleware and the `Session` extractor (feature
/// `actix`, off by default: it builds actix-web).
#[cfg(feature = "actix")]
pub use tandem_actix as actix;

/// The README's code blocks, compiled as doc tests so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
