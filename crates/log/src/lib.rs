//! `clickpulse-log`: the embedded, durable, partitioned, offset-addressed event log that
//! clickpulse uses by default (no server to start).
//!
//! # Map
//!
//! - [`Log`] — a directory of topics; [`Log::open`] with [`LogOptions`] (durability, segment
//!   size, [`Retention`], read-only access).
//! - [`Topic`] — named, with a fixed number of partitions; [`Topic::append`] a [`Batch`],
//!   [`Topic::read`] [`Records`] from any offset, or follow a partition with a [`Reader`].
//! - [`Durability`] — when appends are fsynced, and what survives which crash.
//! - [`format`] — the on-disk format: segment files of checksummed record batches.
//! - [`recovery`] — what opening a damaged partition does ([`RecoveryReport`]).
//! - [`Error`] — every failure, saying who must act.
//!
//! # Model
//!
//! Each partition is an append-only sequence of records with dense offsets from 0. A record has
//! a timestamp (event time, ms), a key (possibly empty) and a value. Appends to a partition are
//! serialized by its writer lock and write one batch with one `write(2)`; any number of threads
//! read concurrently without taking that lock. Another *process* may read the same directory
//! while this one writes (open with [`LogOptions::read_only`]); it sees complete batches only.
//! Two processes cannot write the same topic: the second gets [`Error::Locked`].
//!
//! # Example
//!
//! ```
//! use clickpulse_log::{Batch, Durability, Log, LogOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let options = LogOptions::default().durability(Durability::EveryBatch);
//! let log = Log::open(dir.path(), options)?;
//! let clicks = log.create_topic("clicks", 2)?;
//!
//! let mut batch = Batch::new();
//! batch.push(938_476_800_000, b"v1", b"/frontpage")?;
//! batch.push(938_476_810_000, b"v1", b"/news")?;
//! let offsets = clicks.append(0, &batch)?; // fsynced when this returns
//! assert_eq!(offsets, 0..2);
//!
//! // Another process would open the same directory read-only while we write.
//! let reader_log = Log::open(dir.path(), LogOptions::default().read_only(true))?;
//! let mut reader = reader_log.topic("clicks")?.reader(0, 0)?;
//! let records = reader.poll(100)?;
//! let pages: Vec<&[u8]> = records.iter().map(|r| r.value).collect();
//! assert_eq!(pages, [&b"/frontpage"[..], &b"/news"[..]]);
//! assert_eq!(reader.position(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod batch;
mod commit;
mod error;
mod fsio;
mod lock;
mod log;
mod options;
mod partition;
mod reader;
mod records;
mod retention;
mod segment;
mod topic;

pub mod format;
pub mod recovery;

pub use batch::Batch;
pub use error::{Defect, Error, Result};
pub use log::Log;
pub use options::{Durability, LogOptions, Retention};
pub use reader::Reader;
pub use records::{Record, Records, RecordsIter};
pub use recovery::RecoveryReport;
pub use retention::RetentionReport;
pub use topic::{MAX_PARTITIONS, Topic};
