//! clickpulse-connectors (work in progress)
