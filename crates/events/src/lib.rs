//! Click events and their input formats.

mod event;

pub use event::{ClickEvent, DEFAULT_EVENT_TYPE};
