//! The wire protocol of syncgate, shared by the server and its clients, free
//! of I/O: message types and their MessagePack codec, close and error codes,
//! hybrid logical clocks and the last-writer-wins rule, sync cursors, and
//! WebSocket message reassembly.
//!
//! | module | responsibility |
//! | --- | --- |
//! | [`protocol`] | message types, wire codes ([`protocol::codes`]: what each close and error code means and whether to retry), MessagePack codec |
//! | [`hlc`] | hybrid logical clocks and [`hlc::merge`], the last-writer-wins rule every replica and store applies |
//! | [`cursor`] | `<epoch>:<position>` sync cursors |
//! | [`names`] | the naming rule for topics and collections |
//! | [`assembler`] | WebSocket message reassembly with a total cap (sans-IO) |
//! | [`time`] | Unix time in the protocol's units |
//! | [`values`] | what a value may be (kinds, depth, size), checked on every surface |
#![warn(missing_docs, unreachable_pub)]

pub mod assembler;
pub mod cursor;
pub mod hlc;
pub mod names;
pub mod protocol;
pub mod time;
pub mod values;
