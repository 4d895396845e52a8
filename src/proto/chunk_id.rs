//! Content ids, pure: [`ChunkId`] names a run of bytes by its blake3 hash. The chunk path
//! (client chunker, `Job` recipes, `Missing` replies) and the server's on-disk store
//! (`subsystem::store`, which files each chunk under its id and checks the id on every
//! read) share it; the result cache (`subsystem::cache`) uses the same 32-byte shape for
//! its keys. Neighbours: `proto::msg` (carries ids), `subsystem::store`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The blake3 hash of a chunk's bytes (32 bytes; shown and parsed as 64 lowercase hex
/// digits). Postcard encodes it as the 32 bytes, no length prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `data`: its blake3 hash.
    pub fn of(data: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    /// Whether `data` is the chunk this id names (compared in constant time, as blake3's
    /// `Hash` equality is).
    pub fn matches(&self, data: &[u8]) -> bool {
        blake3::hash(data) == blake3::Hash::from_bytes(self.0)
    }

    /// The 64-digit lowercase hex form (also what `Display` prints).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

/// Why a string is not a [`ChunkId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a chunk id (64 hex digits): {0:?}")]
pub struct ParseChunkIdError(pub String);

impl FromStr for ChunkId {
    type Err = ParseChunkIdError;

    /// Parses 64 hex digits (either case).
    fn from_str(s: &str) -> Result<ChunkId, ParseChunkIdError> {
        let bad = || ParseChunkIdError(s.chars().take(80).collect());
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(bad());
        }
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut id = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let (Some(hi), Some(lo)) = (digit(pair[0]), digit(pair[1])) else {
                return Err(bad());
            };
            id[i] = hi << 4 | lo;
        }
        Ok(ChunkId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_blake3_and_hex_round_trips() {
        let id = ChunkId::of(b"abc");
        // blake3("abc"), from the reference implementation's test vectors.
        assert_eq!(
            id.to_string(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(id.to_hex().parse::<ChunkId>(), Ok(id));
        assert_eq!(id.to_hex().to_uppercase().parse::<ChunkId>(), Ok(id));
        assert!(id.matches(b"abc"));
        assert!(!id.matches(b"abd"));
        assert_eq!(format!("{id:?}"), format!("ChunkId({id})"));
    }

    #[test]
    fn bad_hex_is_refused() {
        for s in ["", "00", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
            assert!(s.parse::<ChunkId>().is_err(), "{s:?}");
        }
        assert!("é".repeat(32).parse::<ChunkId>().is_err());
    }

    #[test]
    fn postcard_is_the_32_bytes() {
        let id = ChunkId::of(b"x");
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bytes, id.0);
        assert_eq!(postcard::from_bytes::<ChunkId>(&bytes).unwrap(), id);
    }
}
