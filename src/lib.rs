//! Rookery: an MQTT 3.1, 3.1.1 and 5.0 broker.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
#![warn(clippy::expect_used, missing_docs)]

pub mod auth;
pub mod protocol;
