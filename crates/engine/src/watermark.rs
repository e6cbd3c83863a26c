//! Watermarks: how far event time has certainly progressed.
//!
//! Every worker reports, for every batch and every event-time source, one [`WatermarkReport`]
//! summarising the partitions it reads. The reports are broadcast to all workers, so each
//! event-time operator combines the same set of reports into the same global watermark for the
//! batch ([`combine`]): the minimum over active partitions of the highest event time seen there,
//! minus the allowed lateness. Idle partitions stop holding it back; when every partition is idle
//! the clock advances it; when every partition has finished (bounded mode) it jumps to the end of
//! time, which closes every window and session.

use serde::{Deserialize, Serialize};

/// One worker's summary of one source's partitions for one batch. Values already have the
/// allowed lateness subtracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatermarkReport {
    /// Some partitions are active: the lowest of their highest event times, minus lateness.
    Active(u64),
    /// Every unfinished partition is idle: the highest event time seen plus how long input has
    /// been idle, minus lateness (the clock's estimate of event time).
    Idle(u64),
    /// Every partition of this worker has ended (bounded mode).
    Finished,
    /// This worker has no partitions of the source, or none has produced anything yet: no opinion.
    Neutral,
}

/// The end of event time: a watermark that closes every window.
pub const END_OF_TIME: u64 = u64::MAX;

/// Combines the reports of one batch into a watermark candidate, or `None` when the reports carry
/// no information (the previous watermark stands).
///
/// # Examples
/// ```
/// use clickpulse_engine::watermark::{combine, WatermarkReport::*, END_OF_TIME};
/// assert_eq!(combine(&[Active(10), Active(7), Finished]), Some(7));
/// assert_eq!(combine(&[Idle(50), Active(7)]), Some(7));
/// assert_eq!(combine(&[Idle(50), Idle(40), Neutral]), Some(40));
/// assert_eq!(combine(&[Finished, Finished]), Some(END_OF_TIME));
/// assert_eq!(combine(&[Neutral]), None);
/// ```
pub fn combine(reports: &[WatermarkReport]) -> Option<u64> {
    let active = reports.iter().filter_map(|r| match r {
        WatermarkReport::Active(t) => Some(*t),
        _ => None,
    });
    if let Some(min) = active.min() {
        return Some(min);
    }
    let idle = reports.iter().filter_map(|r| match r {
        WatermarkReport::Idle(t) => Some(*t),
        _ => None,
    });
    if let Some(min) = idle.min() {
        return Some(min);
    }
    let finished = reports
        .iter()
        .any(|r| matches!(r, WatermarkReport::Finished));
    let all_finished = reports
        .iter()
        .all(|r| matches!(r, WatermarkReport::Finished | WatermarkReport::Neutral));
    (finished && all_finished).then_some(END_OF_TIME)
}

/// The watermark as an event-time operator sees it across batches: monotone, starting at 0.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct WatermarkTracker {
    current: u64,
}

impl WatermarkTracker {
    /// The tracker an operator starts with: the restored one (every worker saved the same
    /// watermark; the highest is taken), or a new one.
    ///
    /// # Errors
    /// [`EngineError::Recovery`](crate::EngineError::Recovery) when the saved state does not
    /// decode.
    pub fn restore(ckpt: &crate::checkpoint::state::StateHandle) -> crate::Result<Self> {
        Ok(ckpt
            .restore::<WatermarkTracker, ()>()?
            .and_then(|(globals, _)| globals.into_iter().max_by_key(|t| t.current))
            .unwrap_or_default())
    }

    /// The watermark before the batch being processed (events are checked for lateness against it).
    pub fn current(&self) -> u64 {
        self.current
    }

    /// Folds in one batch's reports and returns the new watermark.
    pub fn advance(&mut self, reports: &[WatermarkReport]) -> u64 {
        if let Some(candidate) = combine(reports) {
            self.current = self.current.max(candidate);
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::WatermarkReport::*;
    use super::*;

    #[test]
    fn tracker_never_goes_back() {
        let mut t = WatermarkTracker::default();
        assert_eq!(t.advance(&[Active(100)]), 100);
        assert_eq!(t.advance(&[Active(40)]), 100);
        assert_eq!(t.advance(&[Neutral]), 100);
        assert_eq!(t.advance(&[Finished]), END_OF_TIME);
    }

    #[test]
    fn finished_and_active_mix_uses_active() {
        assert_eq!(combine(&[Finished, Active(3)]), Some(3));
        assert_eq!(combine(&[]), None);
    }
}
