//! Batches, event-time windows and the clock that relates batch ids to time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// A batch id: the timely timestamp of everything a micro-batch holds. Batches count from 0.
pub type BatchId = u64;

/// Milliseconds since the Unix epoch, by the system clock.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Maps batch ids to processing time: batch `b` covers `[start_ms + b*interval, start_ms + (b+1)*interval)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchClock {
    /// Wall-clock time of batch 0's start, ms since the Unix epoch.
    pub start_ms: u64,
    /// The batch interval in ms (at least 1).
    pub interval_ms: u64,
}

impl BatchClock {
    /// Start of batch `b` in ms since the epoch.
    pub fn batch_start_ms(&self, b: BatchId) -> u64 {
        self.start_ms
            .saturating_add(b.saturating_mul(self.interval_ms))
    }

    /// End (exclusive) of batch `b` in ms since the epoch.
    pub fn batch_end_ms(&self, b: BatchId) -> u64 {
        self.batch_start_ms(b.saturating_add(1))
    }

    /// How many batches `d` spans, if it is a positive multiple of the interval.
    ///
    /// # Errors
    /// [`EngineError::NotBatchMultiple`] naming `what` and the value otherwise.
    pub fn batches_in(&self, what: &'static str, d: Duration) -> Result<u64> {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let whole_ms = Duration::from_millis(ms) == d;
        if ms == 0 || !whole_ms || ms % self.interval_ms != 0 {
            return Err(EngineError::NotBatchMultiple {
                what,
                value: d,
                batch_interval: Duration::from_millis(self.interval_ms),
            });
        }
        Ok(ms / self.interval_ms)
    }
}

/// A half-open event-time window `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// First millisecond in the window.
    pub start_ms: u64,
    /// First millisecond after the window.
    pub end_ms: u64,
}

impl Window {
    /// Whether `ts_ms` falls in the window.
    pub fn contains(&self, ts_ms: u64) -> bool {
        self.start_ms <= ts_ms && ts_ms < self.end_ms
    }
}

/// How events are assigned to event-time windows. Windows are aligned to multiples of the slide
/// from the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windows {
    /// Back-to-back windows of one size: every event is in exactly one.
    Tumbling {
        /// Window length in ms.
        size_ms: u64,
    },
    /// Overlapping windows of `size_ms` starting every `slide_ms`: an event is in `size/slide` of them.
    Sliding {
        /// Window length in ms.
        size_ms: u64,
        /// Distance between window starts in ms.
        slide_ms: u64,
    },
}

impl Windows {
    /// Tumbling windows of `size`.
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] when `size` is under 1 ms.
    pub fn tumbling(size: Duration) -> Result<Self> {
        let size_ms = positive_ms("window size", size)?;
        Ok(Windows::Tumbling { size_ms })
    }

    /// Sliding windows of `size` every `slide`.
    ///
    /// # Errors
    /// [`EngineError::InvalidConfig`] when either is under 1 ms, or `size` is not a multiple of `slide`.
    pub fn sliding(size: Duration, slide: Duration) -> Result<Self> {
        let size_ms = positive_ms("window size", size)?;
        let slide_ms = positive_ms("window slide", slide)?;
        if size_ms % slide_ms != 0 {
            return Err(EngineError::InvalidConfig {
                key: "window size",
                reason: format!("{size_ms} ms is not a multiple of the slide {slide_ms} ms"),
            });
        }
        Ok(Windows::Sliding { size_ms, slide_ms })
    }

    /// The window length in ms.
    pub fn size_ms(&self) -> u64 {
        match *self {
            Windows::Tumbling { size_ms } | Windows::Sliding { size_ms, .. } => size_ms,
        }
    }

    /// The distance between window starts in ms.
    pub fn slide_ms(&self) -> u64 {
        match *self {
            Windows::Tumbling { size_ms } => size_ms,
            Windows::Sliding { slide_ms, .. } => slide_ms,
        }
    }

    /// Every window that contains `ts_ms`, earliest first.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use clickpulse_engine::{Window, Windows};
    /// let w = Windows::sliding(Duration::from_secs(30), Duration::from_secs(5)).unwrap();
    /// let all: Vec<Window> = w.assign(61_000).collect();
    /// assert_eq!(all.len(), 6);
    /// assert_eq!(all[0], Window { start_ms: 35_000, end_ms: 65_000 });
    /// assert_eq!(all[5], Window { start_ms: 60_000, end_ms: 90_000 });
    /// ```
    pub fn assign(&self, ts_ms: u64) -> impl Iterator<Item = Window> + use<> {
        let (size, slide) = (self.size_ms(), self.slide_ms());
        let last_start = ts_ms - ts_ms % slide;
        let count = size / slide;
        (0..count).rev().filter_map(move |i| {
            let start = last_start.checked_sub(i * slide)?;
            Some(Window {
                start_ms: start,
                end_ms: start.saturating_add(size),
            })
        })
    }

    /// The end of the earliest window containing `ts_ms` (the first to close).
    pub fn first_end(&self, ts_ms: u64) -> u64 {
        self.assign(ts_ms).next().map_or(ts_ms, |w| w.end_ms)
    }
}

fn positive_ms(key: &'static str, d: Duration) -> Result<u64> {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(EngineError::InvalidConfig {
            key,
            reason: format!("{d:?} is under 1 ms"),
        });
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_assigns_one_window() {
        let w = Windows::tumbling(Duration::from_secs(1)).unwrap();
        let all: Vec<_> = w.assign(1_999).collect();
        assert_eq!(
            all,
            vec![Window {
                start_ms: 1_000,
                end_ms: 2_000
            }]
        );
    }

    #[test]
    fn sliding_near_epoch_skips_negative_starts() {
        let w = Windows::sliding(Duration::from_secs(30), Duration::from_secs(5)).unwrap();
        let all: Vec<_> = w.assign(7_000).collect();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|x| x.contains(7_000)));
    }

    #[test]
    fn size_not_multiple_of_slide_is_an_error() {
        let err = Windows::sliding(Duration::from_secs(7), Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("window size"), "{err}");
    }

    #[test]
    fn batches_in_rejects_non_multiples_and_names_the_value() {
        let clock = BatchClock {
            start_ms: 0,
            interval_ms: 1000,
        };
        assert_eq!(
            clock
                .batches_in("window length", Duration::from_secs(30))
                .unwrap(),
            30
        );
        let err = clock
            .batches_in("slide duration", Duration::from_millis(1500))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("slide duration") && text.contains("1.5s"),
            "{text}"
        );
        assert!(clock.batches_in("window length", Duration::ZERO).is_err());
    }
}
