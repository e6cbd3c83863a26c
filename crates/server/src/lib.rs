//! clickpulse-server (work in progress)
