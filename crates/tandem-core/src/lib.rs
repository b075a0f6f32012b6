//! The core of Tandem: the session model, session ids, the codec trait and envelope,
//! and the remote-store trait with its in-process implementation.
//!
//! This crate has no network and no web dependencies. It is what the managers, the
//! codecs (`tandem-codec`), the memcached store (`tandem-memcached`) and the web layer
//! are built on:
//!
//! - [`SessionId`], [`NodeId`], [`Route`]: the id format `<random>-<nodeId>[.<route>]`,
//!   generated from a CSPRNG and parsed strictly before anything touches the network.
//! - [`Session`]: times and typed attributes with per-attribute change tracking.
//! - [`Codec`], [`Encodes`], [`Decodes`]: the swap point for serializers, chosen by type.
//! - [`envelope`]: the versioned binary format a session is stored in.
//! - [`RemoteStore`]: node-addressed async operations (get with CAS, set, add, cas,
//!   delete, touch); [`MemoryStore`] implements it in process.
//! - [`Clock`]: where time is read, so that tests can pause or mock it; [`SystemClock`]
//!   is the real one.
//! - [`NodeSpec`]: the one-line node configuration (`n1:host:port,n2:host:port`).
//! - [`KeyPrefix`], [`StoreKey`]: storage keys that are always valid memcached keys;
//!   [`KeySecret`] derives them from a secret so that they do not reveal ids.
//!
//! It is the model, not the manager: the request lifecycle (sticky and non-sticky
//! modes, the local tier, backups) is `tandem-manager`, built on these pieces; the
//! remote stores (`tandem-memcached`) implement [`RemoteStore`].

mod clock;
mod codec;
pub mod envelope;
mod health;
mod id;
mod key;
pub mod layers;
mod memory;
mod nodes;
mod session;
mod store;
mod time;

pub use clock::{Clock, SystemClock};
pub use codec::{Codec, CodecError, CodecId, Decodes, Encodes};
pub use envelope::EnvelopeError;
pub use health::{NodeHealthReport, NodeHealthState};
pub use id::{
    IdError, MAX_NODE_ID_LEN, MAX_ROUTE_LEN, MAX_SESSION_ID_LEN, NodeId, RANDOM_LEN, RedactedId,
    Route, SessionId,
};
pub use key::{
    KeyError, KeyPrefix, KeySecret, KeySpace, MAX_KEY_LEN, MAX_PREFIX_LEN, MIN_SECRET_LEN, StoreKey,
};
pub use layers::{BlobLayer, LayerError, LayerStats, NoLayer};
pub use memory::{MemoryStore, NodeSnapshot};
pub use nodes::{NodeAddress, NodeSpec, NodeSpecError};
pub use session::{
    AttributeChange, AttributeError, AttributeValue, MAX_ATTRIBUTE_NAME_LEN, Session,
};
pub use store::{
    AddOutcome, CasOutcome, CasToken, DEFAULT_MAX_ITEM_SIZE, Item, NodeStatus, Precondition,
    RemoteStore, SetItem, StoreError, Ttl, WriteItem, WriteOutcome,
};
