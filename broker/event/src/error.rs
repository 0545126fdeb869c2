//! Why an event or a message carrying one was rejected. Messages name the offending attribute
//! so a producer knows what to fix.

/// An invalid event, or a message that does not carry a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A required context attribute is absent.
    #[error("missing required attribute '{0}'")]
    MissingAttribute(&'static str),
    /// An attribute name breaks the naming rule (core spec §3.1.1).
    #[error("invalid attribute name '{0}': names must be lower-case letters and digits only, and not 'data'")]
    InvalidName(String),
    /// The same attribute appears twice.
    #[error("duplicate attribute '{0}'")]
    DuplicateAttribute(String),
    /// An attribute has a value of the wrong type or shape.
    #[error("invalid attribute '{name}': {reason}")]
    InvalidAttribute {
        /// The attribute.
        name: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// `specversion` is not `1.0`.
    #[error("unsupported attribute 'specversion' value '{0}': only '1.0' is accepted")]
    UnsupportedSpecVersion(String),
    /// The message is not well-formed (bad JSON, bad base64, wrong member types…).
    #[error("malformed event: {0}")]
    Malformed(String),
    /// A structured-mode content type other than JSON.
    #[error("unsupported event format '{0}': only application/cloudevents+json and application/cloudevents-batch+json are accepted")]
    UnsupportedFormat(String),
    /// An event inside a JSON batch is invalid; `index` is its zero-based position in the array.
    ///
    /// The inner error is part of the message rather than a `source`, so error reporters that
    /// walk the source chain do not print it twice.
    #[error("event {index}: {error}")]
    InBatch {
        /// Zero-based position of the bad event in the batch array.
        index: usize,
        /// Why that event was rejected.
        error: Box<EventError>,
    },
    /// More attributes than an event may carry (the storage codec counts them in 16 bits).
    #[error("too many attributes: {0} (at most 65535)")]
    TooManyAttributes(usize),
    /// A batch of more events than the limit; the words of
    /// [`LimitExceeded::TooManyEvents`](crate::limits::LimitExceeded::TooManyEvents).
    #[error("the batch has {count} events, above the limit of {limit} (max_batch_events): send it in smaller batches")]
    TooManyEvents {
        /// How many it has.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A stored record could not be decoded.
    #[error("corrupt stored event: {0}")]
    Corrupt(&'static str),
}
