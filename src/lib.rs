//! Tandem: a fault-tolerant, two-tier HTTP session manager for Rust application
//! servers.
//!
//! Each app server keeps sessions in a local tier and backs them up to a set of
//! memcached nodes (the remote tier). In *sticky* mode the local copy is the primary
//! and memcached holds a backup; in *non-sticky* mode memcached primary/backup node
//! pairs are the source of truth. Attribute values are encoded by a pluggable codec,
//! chosen by type: [`SpeedyCodec`] by default, [`JsonCodec`] beside it.
//!
//! This facade re-exports the workspace's crates:
//!
//! - the manager of `tandem-manager` at the top level: [`SessionManager`], its builder,
//!   outcomes and errors;
//! - everything of `tandem-core` at the top level: [`Session`], [`SessionId`],
//!   [`NodeSpec`], the [`Codec`] traits, the [`envelope`], the [`RemoteStore`] trait
//!   and the in-process [`MemoryStore`];
//! - the codecs of `tandem-codec`;
//! - with the default `memcached` feature, the memcached store as [`memcached`].
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

pub use tandem_codec::{JsonCodec, Migrating, MsgpackCodec, PostcardCodec, SpeedyCodec};

/// Codecs, rolling codec migration and stored-bytes layers (compression, encryption).
pub use tandem_codec as codec;
pub use tandem_core::*;
pub use tandem_manager::*;

/// The codec sessions use unless another is chosen.
pub type DefaultCodec = SpeedyCodec;

/// The memcached remote store (feature `memcached`, on by default).
#[cfg(feature = "memcached")]
pub use tandem_memcached as memcached;

/// The web layer: a tower `Layer` and an axum extractor (feature `tower`, on by
/// default).
#[cfg(feature = "tower")]
pub use tandem_tower as tower;

/// The README's code blocks, compiled as doc tests so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
