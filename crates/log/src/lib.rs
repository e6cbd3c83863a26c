//! clickpulse-log (work in progress)
