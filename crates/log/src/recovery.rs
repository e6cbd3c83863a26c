//! Recovery of a partition when it is opened for writing: find the longest valid prefix of its
//! segments, cut the rest, and report what was cut.
//!
//! A crash can leave the last batch of the active segment torn (a `write(2)` cut short), and a
//! machine crash under [`crate::Durability::None`] or [`crate::Durability::Interval`] can leave
//! garbage, zeros or missing bytes anywhere the kernel had not written back. Recovery keeps every
//! batch up to the first one that does not verify and removes everything after it — the rest of
//! that segment and every later segment — because offsets are dense: nothing after a hole can be
//! addressed. What it removed is returned as a [`RecoveryReport`] (and logged at `warn`).
//!
//! What is checked: every batch of the active (last) segment in full (header and payload
//! checksums, record framing), and the headers of sealed segments (which were fsynced when they
//! were rolled, except under [`crate::Durability::None`]); when the cut falls in a sealed segment,
//! that segment is then checked in full too. Payloads of sealed segments are verified by every
//! read instead, which reports damage as [`crate::Error::Corrupt`] rather than dropping data.
//!
//! The decision is the pure function [`decide`] over [`SegmentState`]s; a thin layer does the
//! I/O (scan, truncate, delete, fsync).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::Verify;
use crate::fsio;
use crate::segment::{self, Segment};
use crate::{Defect, Error, Result};

/// What a scan found in one segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentState {
    /// Offset in the file name.
    pub base_offset: u64,
    /// Bytes of the file.
    pub file_bytes: u64,
    /// Bytes of the valid prefix (batches that verify, contiguous from the start).
    pub valid_bytes: u64,
    /// Offset after the last valid batch.
    pub end_offset: u64,
    /// Why the valid prefix stops before the end of the file, if it does.
    pub defect: Option<Defect>,
}

/// What recovery does with a partition's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryDecision {
    /// Every segment is valid to its end and starts where the previous one ended.
    Clean,
    /// Keep segments `..=segment`, cut segment `segment` to `keep_bytes`, delete every later
    /// segment.
    Truncate {
        /// Index of the segment that is cut.
        segment: usize,
        /// Bytes of it to keep.
        keep_bytes: u64,
        /// What was wrong at the cut (or at the start of the next segment).
        defect: Defect,
    },
}

/// Decides what recovery does, from the scan of every segment in offset order. Pure.
pub fn decide(segments: &[SegmentState]) -> RecoveryDecision {
    let mut previous: Option<(usize, &SegmentState)> = None;
    for (i, state) in segments.iter().enumerate() {
        if let Some((p, prev)) = previous {
            if state.base_offset != prev.end_offset {
                return RecoveryDecision::Truncate {
                    segment: p,
                    keep_bytes: prev.valid_bytes,
                    defect: Defect::SegmentGap {
                        expected: prev.end_offset,
                        found: state.base_offset,
                    },
                };
            }
        }
        if let Some(defect) = state.defect {
            return RecoveryDecision::Truncate {
                segment: i,
                keep_bytes: state.valid_bytes,
                defect,
            };
        }
        previous = Some((i, state));
    }
    RecoveryDecision::Clean
}

/// What recovery removed from one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The segment file that was cut (it is now the active segment).
    pub segment: PathBuf,
    /// Byte position of the cut in that file.
    pub position: u64,
    /// Bytes removed in all: the tail of the cut segment and the later segments.
    pub bytes_dropped: u64,
    /// Later segment files that were deleted.
    pub deleted_segments: Vec<PathBuf>,
    /// What was wrong at the cut.
    pub defect: Defect,
    /// The partition's end offset after recovery.
    pub end_offset: u64,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}: {} at byte {} of {}; dropped {} bytes",
            self.topic,
            self.partition,
            self.defect,
            self.position,
            self.segment.display(),
            self.bytes_dropped
        )?;
        if !self.deleted_segments.is_empty() {
            write!(
                f,
                " including {} later segment(s)",
                self.deleted_segments.len()
            )?;
        }
        write!(f, "; log continues at offset {}", self.end_offset)
    }
}

/// The recovered segments of a partition.
pub(crate) struct Recovered {
    /// The segments kept, ascending; never empty.
    pub segments: Vec<Arc<Segment>>,
    /// What was removed, if anything.
    pub report: Option<RecoveryReport>,
}

/// Which partition is recovered, for the report.
pub(crate) struct PartitionName<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub dir: &'a Path,
}

/// Scans, decides and repairs a partition directory. The caller holds the topic's writer lock.
pub(crate) fn recover(name: &PartitionName<'_>, index_interval: u64) -> Result<Recovered> {
    let dir = name.dir;
    let listed = segment::list(dir).map_err(|e| Error::io("listing segments in", dir, e))?;
    if listed.is_empty() {
        let (segment, _) = Segment::create(dir, 0)?;
        return Ok(Recovered {
            segments: vec![Arc::new(segment)],
            report: None,
        });
    }
    let segments: Vec<Arc<Segment>> = listed
        .into_iter()
        .map(|(base, path)| Arc::new(Segment::new(base, path)))
        .collect();
    let (mut states, mut full) = scan_all(&segments, index_interval)?;
    let decision = settle(&segments, &mut states, &mut full, index_interval)?;
    apply(name, segments, &states, decision)
}

/// Scans every segment: the active (last) one in full, sealed ones by their headers (they were
/// fsynced when rolled, except under `Durability::None`). Returns the states and which segments
/// were checked in full.
fn scan_all(segments: &[Arc<Segment>], interval: u64) -> Result<(Vec<SegmentState>, Vec<bool>)> {
    let last = segments.len().saturating_sub(1);
    let mut states = Vec::with_capacity(segments.len());
    let mut full = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let verify = if i == last {
            Verify::Full
        } else {
            Verify::Header
        };
        states.push(scan_state(segment, verify, interval)?);
        full.push(i == last);
    }
    Ok((states, full))
}

/// Decides, and while the cut falls in a segment checked by headers only — which the cut makes
/// the active one — checks that segment in full and decides again.
fn settle(
    segments: &[Arc<Segment>],
    states: &mut [SegmentState],
    full: &mut [bool],
    interval: u64,
) -> Result<RecoveryDecision> {
    let mut decision = decide(states);
    while let RecoveryDecision::Truncate {
        segment: cut,
        defect,
        ..
    } = decision
    {
        let (Some(segment), Some(state), Some(verified)) =
            (segments.get(cut), states.get_mut(cut), full.get_mut(cut))
        else {
            break;
        };
        if *verified {
            break;
        }
        segment.reset_index();
        *state = scan_state(segment, Verify::Full, interval)?;
        *verified = true;
        let keep_bytes = state.valid_bytes;
        decision = match decide(states.get(..=cut).unwrap_or_default()) {
            // Intact in full: the cut stays after it, for the original reason.
            RecoveryDecision::Clean => RecoveryDecision::Truncate {
                segment: cut,
                keep_bytes,
                defect,
            },
            truncate => truncate,
        };
    }
    Ok(decision)
}

fn scan_state(segment: &Segment, verify: Verify, interval: u64) -> Result<SegmentState> {
    let outcome = segment::scan(segment, verify, interval)
        .map_err(|e| Error::io("scanning segment", &segment.path, e))?;
    let end = segment.end();
    Ok(SegmentState {
        base_offset: segment.base,
        file_bytes: outcome.file_len,
        valid_bytes: end.pos,
        end_offset: end.offset,
        defect: outcome.defect,
    })
}

/// Carries out a decision: cuts one file, deletes the later ones, fsyncs.
fn apply(
    name: &PartitionName<'_>,
    mut segments: Vec<Arc<Segment>>,
    states: &[SegmentState],
    decision: RecoveryDecision,
) -> Result<Recovered> {
    let RecoveryDecision::Truncate {
        segment: cut,
        keep_bytes,
        defect,
    } = decision
    else {
        return Ok(Recovered {
            segments,
            report: None,
        });
    };
    let Some(kept) = segments.get(cut).cloned() else {
        return Ok(Recovered {
            segments,
            report: None,
        });
    };
    let removed = segments.split_off(cut + 1);
    let file_bytes = states.get(cut).map_or(keep_bytes, |s| s.file_bytes);
    let mut bytes_dropped = file_bytes.saturating_sub(keep_bytes);
    if keep_bytes < file_bytes {
        truncate_file(&kept.path, keep_bytes)?;
    }
    let mut deleted_segments = Vec::with_capacity(removed.len());
    // Delete from the newest, so that a crash in between leaves a valid prefix behind.
    for (segment, state) in removed.iter().zip(states.iter().skip(cut + 1)).rev() {
        fs::remove_file(&segment.path)
            .map_err(|e| Error::io("deleting segment", &segment.path, e))?;
        bytes_dropped += state.file_bytes;
        deleted_segments.push(segment.path.clone());
    }
    deleted_segments.reverse();
    fsio::sync_dir(name.dir).map_err(|e| Error::io("fsyncing directory", name.dir, e))?;
    let report = RecoveryReport {
        topic: name.topic.to_owned(),
        partition: name.partition,
        segment: kept.path.clone(),
        position: keep_bytes,
        bytes_dropped,
        deleted_segments,
        defect,
        end_offset: kept.end().offset,
    };
    tracing::warn!(%report, "log recovery truncated a damaged tail");
    Ok(Recovered {
        segments,
        report: Some(report),
    })
}

fn truncate_file(path: &Path, len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening segment to truncate", path, e))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("truncating segment", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(base: u64, valid: u64, end: u64, defect: Option<Defect>) -> SegmentState {
        SegmentState {
            base_offset: base,
            file_bytes: valid + u64::from(defect.is_some()) * 7,
            valid_bytes: valid,
            end_offset: end,
            defect,
        }
    }

    #[test]
    fn intact_contiguous_segments_are_clean() {
        let states = [state(0, 100, 10, None), state(10, 50, 15, None)];
        assert_eq!(decide(&states), RecoveryDecision::Clean);
        assert_eq!(decide(&[]), RecoveryDecision::Clean);
    }

    #[test]
    fn torn_active_segment_is_cut_at_its_valid_prefix() {
        let states = [
            state(0, 100, 10, None),
            state(10, 40, 14, Some(Defect::TruncatedPayload)),
        ];
        assert_eq!(
            decide(&states),
            RecoveryDecision::Truncate {
                segment: 1,
                keep_bytes: 40,
                defect: Defect::TruncatedPayload
            }
        );
    }

    #[test]
    fn damaged_sealed_segment_cuts_everything_after_it() {
        let states = [
            state(0, 60, 6, Some(Defect::ZeroFilled)),
            state(10, 50, 15, None),
        ];
        assert_eq!(
            decide(&states),
            RecoveryDecision::Truncate {
                segment: 0,
                keep_bytes: 60,
                defect: Defect::ZeroFilled
            }
        );
    }

    #[test]
    fn gap_between_segments_drops_the_later_ones() {
        let states = [
            state(0, 100, 10, None),
            state(12, 50, 15, None),
            state(15, 5, 16, None),
        ];
        assert_eq!(
            decide(&states),
            RecoveryDecision::Truncate {
                segment: 0,
                keep_bytes: 100,
                defect: Defect::SegmentGap {
                    expected: 10,
                    found: 12
                }
            }
        );
    }
}
