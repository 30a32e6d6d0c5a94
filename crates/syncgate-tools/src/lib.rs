//! What the `syncgate` binary runs besides the server, kept out of the
//! server library: the load generator (`syncgate bench`) and development
//! tokens (`syncgate token`).
//!
//! | module | responsibility |
//! | --- | --- |
//! | [`loadgen`] | `syncgate bench ops` (writers, with an optional pre-auth flood) and `syncgate bench fanout` |
//! | [`devtoken`] | HS256/384/512 development tokens |
//! | [`Seconds`] | durations on the command line (`10`, `0.5`, `10m`) |
#![warn(missing_docs, unreachable_pub)]

pub mod devtoken;
pub mod loadgen;
mod seconds;

pub use seconds::Seconds;
