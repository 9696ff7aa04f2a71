//! A message and what travels with it: its payload, metadata, acknowledger, routing and status.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ack::{AckError, AckSlot, Acker};
use crate::failure::Failure;

/// The batcher a message goes to unless a handler sends it elsewhere.
pub const DEFAULT_BATCHER: &str = "default";

/// One message on its way through a pipeline: its payload (`data`), what its source knows about
/// it (`metadata`), the [`Acker`] that settles it with its source, where it is to be batched,
/// and whether it has failed.
///
/// A message is settled exactly once: by the pipeline when its journey ends (acknowledged if it
/// succeeded, with its failure's outcome if not), or earlier by [`ack_now`](Message::ack_now).
/// A message dropped without being settled (by a panicking task that owned it, say) is settled
/// by its acknowledger as [`Outcome::Nack`](crate::Outcome::Nack) with `requeue: true`, so
/// nothing vanishes silently (`docs/semantics.md`, *Ingest: settlement*).
///
/// # Examples
///
/// ```
/// use ingest::{Acker, BatchKey, Message};
///
/// let acker = Acker::noop();
/// let mut msg = Message::new("cinema,1".to_string(), &acker, 7);
/// msg.put_batcher("cinema");
/// msg.put_batch_key("user-1");
/// assert_eq!(msg.batcher(), "cinema");
/// assert_eq!(msg.batch_key(), &BatchKey::from("user-1"));
/// assert!(!msg.is_failed());
/// msg.fail("bookings-closed");
/// assert_eq!(msg.failure().map(|f| f.reason()), Some("bookings-closed"));
/// ```
pub struct Message<T> {
    /// The payload.
    pub data: T,
    metadata: Metadata,
    pub(crate) ack: AckSlot,
    batcher: Option<Cow<'static, str>>,
    batch_key: BatchKey,
    batch_mode: BatchMode,
    failure: Option<Box<Failure>>,
    attempt: u32,
    /// The index of `batcher` among the pipeline's batchers, once a processor has resolved it.
    pub(crate) route: u32,
    /// Set when the processors' `partition_by` panicked on this message in its producer.
    pub(crate) misrouted: AtomicBool,
}

impl<T> Message<T> {
    /// A message settled by `acker`, which knows it as `tag` (a delivery tag, a sequence
    /// number, an offset: whatever its source names a delivery by).
    pub fn new(data: T, acker: &Acker, tag: u64) -> Self {
        Self::with_slot(data, AckSlot::pending(acker.clone(), tag))
    }

    /// A message nobody needs to hear about: settling it only counts it.
    pub fn unacked(data: T) -> Self {
        Self::with_slot(data, AckSlot::pending(Acker::noop(), 0))
    }

    fn with_slot(data: T, ack: AckSlot) -> Self {
        Message {
            data,
            metadata: Metadata::default(),
            ack,
            batcher: None,
            batch_key: BatchKey::Default,
            batch_mode: BatchMode::Bulk,
            failure: None,
            attempt: 1,
            route: 0,
            misrouted: AtomicBool::new(false),
        }
    }

    /// Replaces the payload, keeping everything else (acknowledger, metadata, routing, status).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Message<U> {
        let Message {
            data,
            metadata,
            ack,
            batcher,
            batch_key,
            batch_mode,
            failure,
            attempt,
            route,
            misrouted,
        } = self;
        Message {
            data: f(data),
            metadata,
            ack,
            batcher,
            batch_key,
            batch_mode,
            failure,
            attempt,
            route,
            misrouted,
        }
    }

    /// What the message's source said about it.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata, to add to or change.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Adds a metadata entry (builder style, for sources).
    pub fn with_metadata(
        mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<Value>,
    ) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// The name of the batcher the message goes to ([`DEFAULT_BATCHER`] unless set).
    pub fn batcher(&self) -> &str {
        self.batcher.as_deref().unwrap_or(DEFAULT_BATCHER)
    }

    /// The batcher's name if one was set.
    pub(crate) fn batcher_if_set(&self) -> Option<&str> {
        self.batcher.as_deref()
    }

    /// Sends the message to the batcher named `name`. A message sent to a batcher the
    /// pipeline does not have fails (in the processor, before it is forwarded).
    pub fn put_batcher(&mut self, name: impl Into<Cow<'static, str>>) {
        self.batcher = Some(name.into());
    }

    /// The key the message is batched by ([`BatchKey::Default`] unless set).
    pub fn batch_key(&self) -> &BatchKey {
        &self.batch_key
    }

    /// Batches the message with the other messages of `key`. Batches of one key (other than
    /// [`BatchKey::Default`]) are handled one at a time, in order.
    pub fn put_batch_key(&mut self, key: impl Into<BatchKey>) {
        self.batch_key = key.into();
    }

    /// Whether the message waits for its batch to fill ([`BatchMode::Bulk`], the default) or
    /// flushes it ([`BatchMode::Flush`]).
    pub fn batch_mode(&self) -> BatchMode {
        self.batch_mode
    }

    /// Sets the batch mode.
    pub fn put_batch_mode(&mut self, mode: BatchMode) {
        self.batch_mode = mode;
    }

    /// Whether the message succeeded so far, or how it failed.
    pub fn status(&self) -> Status<'_> {
        match &self.failure {
            None => Status::Ok,
            Some(failure) => Status::Failed(failure),
        }
    }

    /// How the message failed, if it did.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_deref()
    }

    /// Whether the message has failed.
    pub fn is_failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Fails the message (or replaces its failure). A failed message is not forwarded: the
    /// stage that failed it settles it, after its retries and `handle_failed`.
    pub fn fail(&mut self, failure: impl Into<Failure>) {
        self.failure = Some(Box::new(failure.into()));
    }

    /// Clears a failure, so that the message counts as successful again.
    pub fn clear_failure(&mut self) {
        self.failure = None;
    }

    pub(crate) fn failure_mut(&mut self) -> Option<&mut Failure> {
        self.failure.as_deref_mut()
    }

    /// Which attempt at its current stage this is: 1 the first time, 2 on the first retry...
    /// (A message that reaches a batcher starts again from 1 there.)
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub(crate) fn set_attempt(&mut self, attempt: u32) {
        self.attempt = attempt;
    }

    /// Whether the message is still to be settled (it has not been settled early with
    /// [`ack_now`](Message::ack_now)).
    pub fn is_pending(&self) -> bool {
        self.ack.is_pending()
    }

    /// Acknowledges the message now, as successful, instead of when its journey ends: for
    /// sources that must be told early (a lease about to expire). The message goes on through
    /// the pipeline, but the pipeline never settles it again, whatever happens to it.
    ///
    /// # Errors
    ///
    /// The acknowledger's error. The message counts as settled either way: its acknowledger
    /// has been called, and it is not called again.
    pub async fn ack_now(&mut self) -> Result<(), AckError> {
        self.ack.settle_now().await
    }

    /// Whether the processors' `partition_by` panicked on this message (read by the processor
    /// that receives it, which fails it).
    pub(crate) fn was_misrouted(&self) -> bool {
        self.misrouted.load(Ordering::Relaxed)
    }
}

impl<T: fmt::Debug> fmt::Debug for Message<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("data", &self.data)
            .field("metadata", &self.metadata)
            .field("ack", &self.ack)
            .field("batcher", &self.batcher())
            .field("batch_key", &self.batch_key)
            .field("batch_mode", &self.batch_mode)
            .field("failure", &self.failure)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// Whether a message succeeded so far, from [`Message::status`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Status<'a> {
    /// Nothing has failed it.
    Ok,
    /// It failed, like this.
    Failed(&'a Failure),
}

/// Whether a message waits for its batch to fill or flushes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BatchMode {
    /// The batch goes out when full or when its timeout expires (the default).
    #[default]
    Bulk,
    /// The message's batch goes out as soon as the batcher has taken in the run of messages
    /// it arrived in, with whatever it holds then (useful in tests).
    Flush,
}

/// What messages are batched by: messages of one batcher and key share batches.
///
/// [`BatchKey::Default`] is the key of messages nobody gave one. Batches of any other key are
/// handled one at a time and in order (see the batcher's `key_concurrency` to allow more);
/// batches of the default key go to any free batch processor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BatchKey {
    /// No key.
    #[default]
    Default,
    /// A number.
    Int(u64),
    /// A string.
    Str(Arc<str>),
}

impl BatchKey {
    /// Whether this is the default key.
    pub fn is_default(&self) -> bool {
        matches!(self, BatchKey::Default)
    }
}

impl From<u64> for BatchKey {
    fn from(key: u64) -> Self {
        BatchKey::Int(key)
    }
}

impl From<u32> for BatchKey {
    fn from(key: u32) -> Self {
        BatchKey::Int(key.into())
    }
}

impl From<usize> for BatchKey {
    fn from(key: usize) -> Self {
        BatchKey::Int(key as u64)
    }
}

impl From<&str> for BatchKey {
    fn from(key: &str) -> Self {
        BatchKey::Str(Arc::from(key))
    }
}

impl From<String> for BatchKey {
    fn from(key: String) -> Self {
        BatchKey::Str(Arc::from(key))
    }
}

impl From<Arc<str>> for BatchKey {
    fn from(key: Arc<str>) -> Self {
        BatchKey::Str(key)
    }
}

impl fmt::Display for BatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchKey::Default => f.write_str("default"),
            BatchKey::Int(key) => write!(f, "{key}"),
            BatchKey::Str(key) => f.write_str(key),
        }
    }
}

/// What a source says about a message: named values, in the order they were added.
///
/// Empty by default, and then it holds no allocation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(Cow<'static, str>, Value)>,
}

impl Metadata {
    /// Sets `key` to `value`, replacing any earlier value.
    pub fn insert(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.entries.push((key, value)),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// The entries, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Text.
    Str(Cow<'static, str>),
    /// A signed number.
    Int(i64),
    /// An unsigned number.
    UInt(u64),
    /// A flag.
    Bool(bool),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl Value {
    /// The text, if this is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a number that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(n) => Some(n),
            Value::UInt(n) => i64::try_from(n).ok(),
            _ => None,
        }
    }

    /// The number, if this is a number that fits a `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::UInt(n) => Some(n),
            Value::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    /// The flag, if this is a flag.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(Cow::Owned(s))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::UInt(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_of_a_word_fits_in_128_bytes() {
        // Moves of up to 128 bytes are copied inline; a larger message costs a `memcpy` call
        // each time it moves between a producer, a processor and a batcher.
        assert!(std::mem::size_of::<Message<u64>>() <= 128);
    }

    #[test]
    fn metadata_keeps_order_and_replaces() {
        let mut m = Metadata::default();
        m.insert("a", 1i64);
        m.insert("b", "x");
        m.insert("a", 2u64);
        let entries: Vec<_> = m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        assert_eq!(
            entries,
            vec![("a".into(), Value::UInt(2)), ("b".into(), Value::from("x"))]
        );
        assert_eq!(m.get("a").and_then(Value::as_i64), Some(2));
        assert_eq!(
            m.remove("b").and_then(|v| v.as_str().map(String::from)),
            Some("x".into())
        );
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn map_keeps_the_envelope() {
        let mut msg = Message::unacked(21u32);
        msg.put_batcher("b");
        msg.put_batch_key(3u64);
        msg.put_batch_mode(BatchMode::Flush);
        let msg = msg.map(|x| x * 2);
        assert_eq!(msg.data, 42);
        assert_eq!(msg.batcher(), "b");
        assert_eq!(msg.batch_key(), &BatchKey::Int(3));
        assert_eq!(msg.batch_mode(), BatchMode::Flush);
        assert!(msg.is_pending());
    }
}
