//! Where accepted events go: the [`EventAppender`] extension point.

use std::sync::{Arc, Mutex, PoisonError};

use clickpulse_events::ClickEvent;

/// Durable storage for collected events (the embedded log, Kafka, a test double).
///
/// The collector calls [`append`](EventAppender::append) from one dedicated writer thread,
/// with the events of every request that arrived while the previous call ran (group commit),
/// and answers those requests only after it returns. So an implementation may block (write,
/// fsync) but must not return `Ok` before the events are as durable as it promises.
pub trait EventAppender: Send + Sync + 'static {
    /// Appends `events`, in order, durably.
    ///
    /// # Errors
    /// An [`AppendError`] saying whether a retry can help; none of `events` should be
    /// considered stored then (the collector answers every request of the group with an error).
    fn append(&self, events: &[ClickEvent]) -> Result<(), AppendError>;
}

/// Why an append failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// An I/O error in the storage; a later retry may succeed.
    #[error("storage I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// The storage is closed, poisoned or overloaded; a later retry may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The storage refused these events (too large, bad encoding); retrying them cannot help.
    #[error("storage refused the events: {0}")]
    Rejected(String),
}

impl From<std::io::Error> for AppendError {
    fn from(e: std::io::Error) -> Self {
        AppendError::Io(Arc::new(e))
    }
}

impl AppendError {
    /// Whether the same append may succeed later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, AppendError::Rejected(_))
    }
}

/// An in-memory appender: keeps every event, durable only as long as the process. For tests,
/// demos and benchmarks of the HTTP path alone.
#[derive(Debug, Default)]
pub struct MemoryAppender {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    events: Vec<ClickEvent>,
    appends: usize,
}

impl MemoryAppender {
    /// An empty appender.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every event appended so far, in order.
    pub fn events(&self) -> Vec<ClickEvent> {
        self.lock().events.clone()
    }

    /// How many events were appended.
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Whether nothing was appended yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many `append` calls there were (fewer than requests when group commit merged some).
    pub fn appends(&self) -> usize {
        self.lock().appends
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventAppender for MemoryAppender {
    fn append(&self, events: &[ClickEvent]) -> Result<(), AppendError> {
        let mut state = self.lock();
        state.events.extend_from_slice(events);
        state.appends += 1;
        Ok(())
    }
}
