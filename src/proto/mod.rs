//! Wire formats, pure: native frames and messages ([`msg`], [`frame`]), blob
//! compression ([`compress`]), the mux's status report and counters ([`status`], [`stats`]), and the stock distcc protocol ([`distcc`]). No sockets
//! here; readers and writers are generic over tokio `AsyncRead`/`AsyncWrite` (and
//! `std::io` for the synchronous wrapper). Neighbours: `wrapper` and `mux` (clients),
//! `subsystem` (the server side).
//!
//! Every length that arrives from a peer is checked against a bound before anything is
//! allocated for it.

pub mod compress;
pub mod distcc;
pub mod fault;
pub mod frame;
pub mod identity;
pub mod msg;
pub mod stats;
pub mod status;

/// Errors of decoding or encoding anything on the wire.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream failed underneath us.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the stream in the middle of `what`.
    #[error("truncated {what}: the peer closed the stream in the middle")]
    Truncated {
        /// The item that was being read.
        what: &'static str,
    },
    /// A length on the wire (or a decoded size) exceeds its bound.
    #[error("{what} too large: {len} bytes, at most {max} allowed")]
    TooLarge {
        /// The item whose length was refused.
        what: &'static str,
        /// The length the peer announced.
        len: u64,
        /// The bound it broke.
        max: u64,
    },
    /// The stream did not start with the hoardcc magic: typically shell start-up
    /// output (a login banner, `echo` in `.bashrc`) ahead of the subsystem's own bytes.
    #[error("garbage instead of the hoardcc handshake (shell start-up output?): \"{preview}\"")]
    Garbage {
        /// The first bytes received (at most 64), escaped for printing.
        preview: String,
    },
    /// No protocol version both sides speak.
    #[error(
        "protocol version mismatch: we speak {ours}, the peer speaks {theirs_min}..={theirs_max}"
    )]
    Version {
        /// Our newest version.
        ours: u32,
        /// The peer's oldest version.
        theirs_min: u32,
        /// The peer's newest version.
        theirs_max: u32,
    },
    /// A payload did not decode (postcard, lz4, lzo, UTF-8, hex).
    #[error("cannot decode: {0}")]
    Decode(String),
    /// Compression failed.
    #[error("cannot compress: {0}")]
    Compress(String),
    /// distcc: the next token was not the one the protocol requires here.
    #[error("distcc protocol derailment: expected token {expected}, got \"{got}\"")]
    Derailed {
        /// The token the protocol calls for.
        expected: String,
        /// What arrived instead (the 12-byte header, escaped).
        got: String,
    },
    /// A valid but unsupported feature (e.g. distcc protocol 3, pump mode).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Escapes bytes for an error message: printable ASCII as is, the rest as `\n`, `\x00`…
pub(crate) fn escape_preview(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}
