//! Retention: which old segments of a partition to delete. The decision is the pure function
//! [`segments_to_delete`]; [`crate::Topic::enforce_retention`] does the I/O.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::Retention;

/// What retention needs to know about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentAge {
    /// Bytes of the segment.
    pub bytes: u64,
    /// When the segment was last written.
    pub modified: SystemTime,
}

/// How many of the oldest segments to delete. Pure.
///
/// `segments` are in offset order, the last being the active segment, which is never deleted.
/// A segment goes when its last write is older than `max_age`, or while the partition holds more
/// than `max_bytes`; deletion is always of a prefix, so the offsets that remain stay dense.
pub(crate) fn segments_to_delete(
    segments: &[SegmentAge],
    retention: &Retention,
    now: SystemTime,
) -> usize {
    let deletable = segments.len().saturating_sub(1);
    let expired = |s: &SegmentAge| match retention.max_age {
        Some(age) => now.duration_since(s.modified).unwrap_or(Duration::ZERO) > age,
        None => false,
    };
    let by_age = segments
        .iter()
        .take(deletable)
        .take_while(|s| expired(s))
        .count();
    let by_size = match retention.max_bytes {
        Some(limit) => {
            let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
            let mut n = 0;
            for segment in segments.iter().take(deletable) {
                if total <= limit {
                    break;
                }
                total -= segment.bytes;
                n += 1;
            }
            n
        }
        None => 0,
    };
    by_age.max(by_size)
}

/// What retention deleted from one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The segment files deleted, oldest first.
    pub deleted_segments: Vec<PathBuf>,
    /// Bytes deleted.
    pub bytes_deleted: u64,
    /// The partition's earliest offset afterwards.
    pub start_offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn seg(bytes: u64, hours_ago: u64, now: SystemTime) -> SegmentAge {
        SegmentAge {
            bytes,
            modified: now - HOUR * hours_ago as u32,
        }
    }

    #[test]
    fn forever_deletes_nothing() {
        let now = SystemTime::now();
        let segs = [seg(100, 100, now), seg(100, 0, now)];
        assert_eq!(segments_to_delete(&segs, &Retention::forever(), now), 0);
    }

    #[test]
    fn age_deletes_the_expired_prefix_but_never_the_active_segment() {
        let now = SystemTime::now();
        let retention = Retention::forever().max_age(HOUR * 10);
        let segs = [
            seg(1, 30, now),
            seg(1, 20, now),
            seg(1, 5, now),
            seg(1, 50, now),
        ];
        assert_eq!(segments_to_delete(&segs, &retention, now), 2);
        let all_old = [seg(1, 30, now), seg(1, 20, now)];
        assert_eq!(segments_to_delete(&all_old, &retention, now), 1);
    }

    #[test]
    fn size_deletes_oldest_until_under_the_limit() {
        let now = SystemTime::now();
        let retention = Retention::forever().max_bytes(250);
        let segs = [
            seg(100, 0, now),
            seg(100, 0, now),
            seg(100, 0, now),
            seg(10, 0, now),
        ];
        assert_eq!(segments_to_delete(&segs, &retention, now), 1);
        let tiny = Retention::forever().max_bytes(0);
        assert_eq!(segments_to_delete(&segs, &tiny, now), 3);
    }

    #[test]
    fn clock_going_backwards_expires_nothing() {
        let now = SystemTime::now();
        let retention = Retention::forever().max_age(HOUR);
        let future = SegmentAge {
            bytes: 1,
            modified: now + HOUR * 5,
        };
        assert_eq!(segments_to_delete(&[future, future], &retention, now), 0);
    }
}
