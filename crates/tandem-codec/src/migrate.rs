//! Rolling codec migration: write with one codec, read what several wrote.

use std::fmt;
use std::marker::PhantomData;

use tandem_core::{AttributeError, Codec, CodecError, CodecId, Decodes, Encodes, Session};

/// A codec that writes with `W` and also reads what any codec of the tuple `R` wrote:
/// the codec of a cluster in the middle of switching from one serializer to another.
///
/// Sessions and attributes written through it are recorded as written by `W` (its
/// [`ID`](Codec::ID) is `W`'s), so servers that already run plain `W` read them too.
/// Reading goes by the codec id each attribute was stored with: `W`'s own bytes go to
/// `W`, bytes of a reader codec to that codec. Anything else, such as a session
/// written by a codec that is neither `W` nor in `R`, is refused by the envelope with
/// [`EnvelopeError::CodecMismatch`](tandem_core::EnvelopeError::CodecMismatch), which
/// the manager counts and answers with a fresh session.
///
/// Every reader must be able to decode each type read through the migrating codec: to
/// read a `Cart` that `JsonCodec` may have written, `Cart` must be `Deserialize` as
/// well as speedy's `Readable`.
///
/// # A migration, step by step
///
/// Switching a running cluster from JSON to speedy:
///
/// 1. Deploy `Migrating<JsonCodec, (SpeedyCodec,)>`: every server still writes JSON
///    (servers not yet upgraded read everything), and can already read speedy.
/// 2. Deploy `Migrating<SpeedyCodec, (JsonCodec,)>`: new and changed attributes are
///    written with speedy; attributes written with JSON stay readable.
/// 3. Once every session that holds JSON attributes has expired or been rewritten, go
///    to plain `SpeedyCodec`.
///
/// An attribute is rewritten by the writer codec when the application sets it. An
/// attribute that is read but never set keeps its old encoding for as long as its
/// session lives; [`Migrating::upgrade`] rewrites it explicitly. A server of step 3
/// that meets an old attribute anyway refuses the whole session (counted, logged, and
/// answered with a fresh session), so step 3 should wait for the longest session
/// lifetime the application allows.
///
/// (Step 1 is needed when sessions are shared by servers: without it, a server that
/// is upgraded first writes speedy that the servers not yet upgraded cannot read.)
///
/// ```
/// use std::time::SystemTime;
/// use tandem_codec::{JsonCodec, Migrating, MsgpackCodec, SpeedyCodec};
/// use tandem_core::{envelope, NodeId, Session, SessionId};
///
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, speedy::Readable, speedy::Writable)]
/// struct Cart { items: u32 }
///
/// let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
/// // A session an old server wrote with JSON.
/// let mut old: Session<JsonCodec> = Session::new(id.clone(), SystemTime::now(), None);
/// old.insert("cart", &Cart { items: 2 }).unwrap();
/// let stored = envelope::encode(&old);
///
/// type Codec = Migrating<SpeedyCodec, (JsonCodec, MsgpackCodec)>;
/// let mut session: Session<Codec> = envelope::decode(id, &stored).unwrap();
/// assert_eq!(session.get::<Cart>("cart").unwrap(), Some(Cart { items: 2 }));
///
/// // Setting the attribute rewrites it with speedy.
/// session.insert("cart", &Cart { items: 3 }).unwrap();
/// assert_eq!(session.value("cart").unwrap().codec(), tandem_core::CodecId::SPEEDY);
/// ```
pub struct Migrating<W, R> {
    codecs: PhantomData<fn() -> (W, R)>,
}

impl<W, R> fmt::Debug for Migrating<W, R>
where
    W: Codec,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Migrating<{}, ..>", W::NAME)
    }
}

impl<W, R> Default for Migrating<W, R> {
    fn default() -> Self {
        Migrating {
            codecs: PhantomData,
        }
    }
}

impl<W, R> Clone for Migrating<W, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W, R> Copy for Migrating<W, R> {}

/// A set of codecs a [`Migrating`] codec reads besides its writer: a tuple of up to
/// eight codecs, `(A,)`, `(A, B)`, ... (or `()` for none).
pub trait Readers: Send + Sync + 'static {
    /// Whether any codec of the set reads bytes that `written_by` wrote.
    fn reads(written_by: CodecId) -> bool;
}

/// A set of [`Readers`] each of which can decode values of type `T`.
pub trait ReadersDecode<T>: Readers {
    /// Decodes `bytes` with the first codec of the set that reads `written_by`;
    /// `None` if none does.
    fn decode_written_by(written_by: CodecId, bytes: &[u8]) -> Option<Result<T, CodecError>>;
}

impl Readers for () {
    fn reads(_written_by: CodecId) -> bool {
        false
    }
}

impl<T> ReadersDecode<T> for () {
    fn decode_written_by(_written_by: CodecId, _bytes: &[u8]) -> Option<Result<T, CodecError>> {
        None
    }
}

macro_rules! readers_tuple {
    ($($codec:ident),+) => {
        impl<$($codec: Codec),+> Readers for ($($codec,)+) {
            fn reads(written_by: CodecId) -> bool {
                $($codec::reads(written_by))||+
            }
        }

        impl<T, $($codec: Decodes<T>),+> ReadersDecode<T> for ($($codec,)+) {
            fn decode_written_by(
                written_by: CodecId,
                bytes: &[u8],
            ) -> Option<Result<T, CodecError>> {
                $(
                    if $codec::reads(written_by) {
                        return Some($codec::decode_written_by(written_by, bytes));
                    }
                )+
                None
            }
        }
    };
}

readers_tuple!(A);
readers_tuple!(A, B);
readers_tuple!(A, B, C);
readers_tuple!(A, B, C, D);
readers_tuple!(A, B, C, D, E);
readers_tuple!(A, B, C, D, E, F);
readers_tuple!(A, B, C, D, E, F, G);
readers_tuple!(A, B, C, D, E, F, G, H);

impl<W: Codec, R: Readers> Codec for Migrating<W, R> {
    const ID: CodecId = W::ID;
    const NAME: &'static str = W::NAME;

    fn reads(written_by: CodecId) -> bool {
        W::reads(written_by) || R::reads(written_by)
    }
}

impl<T: ?Sized, W: Encodes<T>, R: Readers> Encodes<T> for Migrating<W, R> {
    fn encode(value: &T) -> Result<Vec<u8>, CodecError> {
        W::encode(value)
    }
}

impl<T, W: Decodes<T>, R: ReadersDecode<T>> Decodes<T> for Migrating<W, R> {
    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        W::decode(bytes)
    }

    fn decode_written_by(written_by: CodecId, bytes: &[u8]) -> Result<T, CodecError> {
        if W::reads(written_by) {
            return W::decode_written_by(written_by, bytes);
        }
        R::decode_written_by(written_by, bytes).unwrap_or(Err(CodecError::Mismatch {
            written_by,
            reader: W::ID,
        }))
    }
}

impl<W: Codec, R: Readers> Migrating<W, R> {
    /// Rewrites attribute `name` with the writer codec if another codec wrote it.
    /// Returns whether it was rewritten (which makes it a change of the session).
    ///
    /// For attributes an application reads but never sets, which would otherwise keep
    /// their old encoding as long as their session lives.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use tandem_codec::{JsonCodec, Migrating, PostcardCodec};
    /// use tandem_core::{envelope, CodecId, NodeId, Session, SessionId};
    ///
    /// let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
    /// let mut old: Session<JsonCodec> = Session::new(id.clone(), SystemTime::now(), None);
    /// old.insert("locale", "en-GB").unwrap();
    ///
    /// type Codec = Migrating<PostcardCodec, (JsonCodec,)>;
    /// let mut session: Session<Codec> = envelope::decode(id, &envelope::encode(&old)).unwrap();
    /// assert!(Codec::upgrade::<String>(&mut session, "locale").unwrap());
    /// assert_eq!(session.value("locale").unwrap().codec(), CodecId::POSTCARD);
    /// assert!(!Codec::upgrade::<String>(&mut session, "locale").unwrap()); // already current
    /// assert!(!Codec::upgrade::<String>(&mut session, "missing").unwrap());
    /// ```
    pub fn upgrade<T>(session: &mut Session<Self>, name: &str) -> Result<bool, AttributeError>
    where
        Self: Encodes<T> + Decodes<T>,
    {
        match session.value(name) {
            Some(value) if value.codec() != W::ID => {}
            _ => return Ok(false),
        }
        let Some(value) = session.get::<T>(name)? else {
            return Ok(false);
        };
        session.insert(name, &value)
    }

    /// The names of the attributes of `session` that a codec other than the writer
    /// wrote: what is left to migrate.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use tandem_codec::{JsonCodec, Migrating, SpeedyCodec};
    /// use tandem_core::{NodeId, Session, SessionId};
    ///
    /// let id = SessionId::generate(&NodeId::new("n1").unwrap(), None);
    /// let session: Session<Migrating<SpeedyCodec, (JsonCodec,)>> =
    ///     Session::new(id, SystemTime::now(), None);
    /// assert_eq!(Migrating::<SpeedyCodec, (JsonCodec,)>::not_yet_migrated(&session).count(), 0);
    /// ```
    pub fn not_yet_migrated(session: &Session<Self>) -> impl Iterator<Item = &str> {
        session
            .values()
            .filter(|(_, value)| value.codec() != W::ID)
            .map(|(name, _)| name)
    }
}
