//! The wire protocol: message types, codes, and the MessagePack codec.
//!
//! Every message is one binary WebSocket message holding one MessagePack map
//! with a string `type`. Client messages are decoded by hand from a borrowed
//! [`rmpv::ValueRef`] tree (see [`codec`]) so that every field error is precise
//! and one bad op in a batch never spoils the others, and plain `OP_BATCH`es
//! straight from the bytes (`batch`); server messages are encoded with serde.

mod batch;
pub mod codec;
pub mod codes;
mod messages;

pub use codec::{
    DecodeError, DecodeLimits, decode_client, decode_client_tree, encode_client, encode_server, encoded_len,
};
pub use codes::AuthFailCode;
pub use messages::OpOutcome;
pub use messages::{ClientMessage, Member, OpInput, RawOp, Record, ServerMessage, SessionLimits};

/// Version announced in `AUTH_REQUIRED`.
pub const PROTOCOL_VERSION: u32 = 1;
