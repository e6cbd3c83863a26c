//! clickpulse-job (work in progress)
