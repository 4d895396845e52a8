//! Payload compression: LZ4 blocks for the native protocol's [`Blob`]s (preprocessed
//! source going out, objects and big stderr coming back), and LZO1X for stock distcc's
//! protocol 2. Neighbours: `proto::msg` (defines `Blob`), `proto::distcc` (the LZO
//! user), `wrapper` / `subsystem` (pack and unpack blobs).
//!
//! Decoding never trusts a length it has not bounded: a blob's `raw_len` is checked
//! against the caller's maximum before the output buffer exists, and LZO (which carries
//! no length on the wire) grows its buffer only as far as the caller allows.

use super::msg::{Blob, Codec};
use super::Error;

/// The largest blob anyone should ask [`Blob::unpack`] for: 1 GiB.
pub const MAX_BLOB: u64 = 1 << 30;
/// Below this size compression is not worth its CPU.
const MIN_PACK_LEN: usize = 256;
/// LZ4 cannot expand data by more than ~255:1 (each extension byte adds at most 255 to a
/// match length); a `raw_len` beyond this bound is a lie and is refused before allocating.
const LZ4_MAX_RATIO: u64 = 256;
/// Slack for the LZ4 ratio bound on tiny inputs.
const LZ4_RATIO_SLACK: u64 = 1024;
/// First guess for the LZO output size, as a multiple of the input size.
const LZO_FIRST_GUESS_RATIO: usize = 8;
/// Smallest first LZO output buffer.
const LZO_MIN_GUESS: usize = 64 << 10;

impl Blob {
    /// Packs `data`: LZ4 (block format) when it is at least 256 bytes long and shrinks,
    /// otherwise stored raw.
    pub fn pack(data: &[u8]) -> Blob {
        if data.len() >= MIN_PACK_LEN {
            let packed = lz4_flex::block::compress(data);
            if packed.len() < data.len() {
                return Blob {
                    codec: Codec::Lz4,
                    raw_len: data.len() as u64,
                    data: packed,
                };
            }
        }
        Blob::raw(data.to_vec())
    }

    /// Wraps `data` uncompressed.
    pub fn raw(data: Vec<u8>) -> Blob {
        Blob {
            codec: Codec::None,
            raw_len: data.len() as u64,
            data,
        }
    }

    /// The bytes of an uncompressed blob (`None` for a compressed one: unpack it first).
    pub fn raw_bytes(&self) -> Option<&[u8]> {
        (self.codec == Codec::None).then_some(&self.data[..])
    }

    /// The empty blob.
    pub fn empty() -> Blob {
        Blob::raw(Vec::new())
    }

    /// Decodes the blob, refusing more than `max` bytes of output.
    ///
    /// # Errors
    /// [`Error::TooLarge`] if `raw_len > max` (checked before any allocation);
    /// [`Error::Decode`] if the data is malformed or does not decode to exactly
    /// `raw_len` bytes.
    pub fn unpack(&self, max: u64) -> Result<Vec<u8>, Error> {
        self.check(max)?;
        match self.codec {
            Codec::None => Ok(self.data.clone()),
            Codec::Lz4 => self.unpack_lz4(),
        }
    }

    /// Like [`Blob::unpack`], but consumes the blob, so raw data is not copied.
    ///
    /// # Errors
    /// As [`Blob::unpack`].
    pub fn into_unpacked(self, max: u64) -> Result<Vec<u8>, Error> {
        self.check(max)?;
        match self.codec {
            Codec::None => Ok(self.data),
            Codec::Lz4 => self.unpack_lz4(),
        }
    }

    /// Bounds checks that need no decoding.
    fn check(&self, max: u64) -> Result<(), Error> {
        if self.raw_len > max {
            return Err(Error::TooLarge {
                what: "blob",
                len: self.raw_len,
                max,
            });
        }
        match self.codec {
            Codec::None if self.data.len() as u64 != self.raw_len => Err(Error::Decode(format!(
                "raw blob says {} bytes but holds {}",
                self.raw_len,
                self.data.len()
            ))),
            Codec::Lz4
                if self.raw_len
                    > (self.data.len() as u64)
                        .saturating_mul(LZ4_MAX_RATIO)
                        .saturating_add(LZ4_RATIO_SLACK) =>
            {
                Err(Error::Decode(format!(
                    "lz4 blob of {} bytes cannot decode to the {} bytes it claims",
                    self.data.len(),
                    self.raw_len
                )))
            }
            _ => Ok(()),
        }
    }

    /// Decodes an LZ4 blob whose `raw_len` has passed [`Blob::check`].
    fn unpack_lz4(&self) -> Result<Vec<u8>, Error> {
        let raw_len = usize::try_from(self.raw_len)
            .map_err(|_| Error::Decode(format!("blob of {} bytes", self.raw_len)))?;
        let mut out = vec![0u8; raw_len];
        let n = lz4_flex::block::decompress_into(&self.data, &mut out)
            .map_err(|e| Error::Decode(format!("lz4: {e}")))?;
        if n != raw_len {
            return Err(Error::Decode(format!(
                "lz4 blob decoded to {n} bytes, but says {raw_len}"
            )));
        }
        Ok(out)
    }
}

/// Compresses `data` with LZO1X, as stock distcc does for protocol 2 (`,lzo` hosts).
///
/// Empty input gives empty output, which [`lzo_decompress`] reads back as empty (distcc
/// sends empty payloads as length 0). lzokay itself would emit `11 11 00 00` for it, a
/// stream its own decoder refuses ("lookbehind overrun"; found by `fuzz/` target `native`).
///
/// # Errors
/// [`Error::Compress`] if the compressor fails (it does not for valid input).
pub fn lzo_compress(data: &[u8]) -> Result<Vec<u8>, Error> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    lzokay::compress::compress(data).map_err(|e| Error::Compress(format!("lzo: {e}")))
}

/// Decompresses LZO1X data of unknown decoded size, refusing more than `max` bytes.
///
/// distcc sends only the compressed length, so the output buffer starts at a guess and
/// doubles whenever the decoder overruns it, up to `max`. Empty input decodes to empty
/// output (distcc sends empty payloads uncompressed, as length 0).
///
/// # Errors
/// [`Error::TooLarge`] (with `len` = `max + 1`, meaning "more than `max`") if the output
/// would exceed `max`; [`Error::Decode`] on malformed or trailing input.
pub fn lzo_decompress(data: &[u8], max: u64) -> Result<Vec<u8>, Error> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let mut cap = data
        .len()
        .saturating_mul(LZO_FIRST_GUESS_RATIO)
        .max(LZO_MIN_GUESS)
        .min(limit);
    loop {
        let mut out = vec![0u8; cap];
        match lzokay::decompress::decompress(data, &mut out) {
            Ok(n) => {
                out.truncate(n);
                return Ok(out);
            }
            Err(lzokay::Error::OutputOverrun) if cap < limit => {
                cap = cap.saturating_mul(2).min(limit);
            }
            Err(lzokay::Error::OutputOverrun) => {
                return Err(Error::TooLarge {
                    what: "lzo output",
                    len: max.saturating_add(1),
                    max,
                });
            }
            Err(e) => return Err(Error::Decode(format!("lzo: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// About `n` bytes of plausible preprocessed C.
    fn c_like_text(n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 200);
        let mut i = 0u64;
        while out.len() < n {
            let line = format!(
                "# {} \"/usr/include/stdio.h\" 3 4\nstatic inline int func_{i}(int a, const char *s) {{\n    \
                 if (a > {}) return printf(\"%d %s\\n\", a * {}, s);\n    return a - {};\n}}\n",
                i % 977,
                i * 31 % 1000,
                i % 13,
                i % 7
            );
            out.extend_from_slice(line.as_bytes());
            i += 1;
        }
        out
    }

    /// Deterministic incompressible bytes (xorshift).
    fn noise(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn lz4_blob_round_trips() {
        let text = c_like_text(200_000);
        let blob = Blob::pack(&text);
        assert_eq!(blob.codec, Codec::Lz4);
        assert_eq!(blob.raw_len, text.len() as u64);
        assert!(blob.data.len() < text.len() / 2, "{}", blob.data.len());
        assert_eq!(blob.unpack(MAX_BLOB).unwrap(), text);
        assert_eq!(blob.into_unpacked(text.len() as u64).unwrap(), text);
    }

    #[test]
    fn small_or_incompressible_data_is_stored_raw() {
        let small = Blob::pack(&[b'a'; 255]);
        assert_eq!(small.codec, Codec::None);
        assert_eq!(small.unpack(255).unwrap(), vec![b'a'; 255]);
        let noisy = noise(10_000);
        let blob = Blob::pack(&noisy);
        assert_eq!(blob.codec, Codec::None);
        assert_eq!(blob.data, noisy);
        assert_eq!(blob.unpack(MAX_BLOB).unwrap(), noisy);
        let empty = Blob::empty();
        assert_eq!(empty.raw_len, 0);
        assert_eq!(empty.unpack(0).unwrap(), Vec::<u8>::new());
        assert_eq!(Blob::pack(b""), Blob::empty());
    }

    #[test]
    fn raw_len_lies_are_decode_errors() {
        let text = c_like_text(10_000);
        let mut blob = Blob::pack(&text);
        assert_eq!(blob.codec, Codec::Lz4);
        blob.raw_len += 1;
        assert!(matches!(blob.unpack(MAX_BLOB), Err(Error::Decode(_))));
        blob.raw_len -= 2;
        assert!(matches!(blob.unpack(MAX_BLOB), Err(Error::Decode(_))));
        // A ratio no LZ4 stream can reach is refused without decoding.
        let bomb = Blob {
            codec: Codec::Lz4,
            raw_len: 100 << 20,
            data: vec![0; 16],
        };
        assert!(matches!(bomb.unpack(MAX_BLOB), Err(Error::Decode(_))));
        let raw = Blob {
            codec: Codec::None,
            raw_len: 3,
            data: b"four".to_vec(),
        };
        assert!(matches!(raw.unpack(MAX_BLOB), Err(Error::Decode(_))));
        assert!(matches!(raw.into_unpacked(MAX_BLOB), Err(Error::Decode(_))));
    }

    #[test]
    fn raw_len_over_max_is_too_large() {
        let text = c_like_text(10_000);
        let blob = Blob::pack(&text);
        let max = text.len() as u64 - 1;
        match blob.unpack(max) {
            Err(Error::TooLarge { what, len, max: m }) => {
                assert_eq!(what, "blob");
                assert_eq!(len, text.len() as u64);
                assert_eq!(m, max);
            }
            other => panic!("{other:?}"),
        }
        // Checked before decoding: even a claim of 2^63 bytes is refused cheaply.
        let lie = Blob {
            codec: Codec::Lz4,
            raw_len: 1 << 63,
            data: vec![],
        };
        assert!(matches!(lie.unpack(MAX_BLOB), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn lzo_round_trips_a_megabyte_of_c() {
        let text = c_like_text(1 << 20);
        let packed = lzo_compress(&text).unwrap();
        assert!(packed.len() < text.len() / 3, "{}", packed.len());
        assert_eq!(lzo_decompress(&packed, MAX_BLOB).unwrap(), text);
        // Exactly enough room is enough.
        assert_eq!(lzo_decompress(&packed, text.len() as u64).unwrap(), text);
    }

    #[test]
    fn lzo_round_trips_incompressible_and_tiny_data() {
        let noisy = noise(300_000);
        let packed = lzo_compress(&noisy).unwrap();
        assert_eq!(lzo_decompress(&packed, MAX_BLOB).unwrap(), noisy);
        for data in [&b"x"[..], b"ab", b"hello, world\n"] {
            let packed = lzo_compress(data).unwrap();
            assert_eq!(lzo_decompress(&packed, 100).unwrap(), data);
        }
        assert_eq!(lzo_decompress(&[], 0).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn lzo_empty_input_round_trips() {
        // Regression (fuzz target `native`): lzokay encodes empty input as a stream its
        // decoder refuses, so lzo_compress(&[]) did not decode under any bound.
        let packed = lzo_compress(&[]).unwrap();
        for max in [0, 1, MAX_BLOB] {
            assert_eq!(lzo_decompress(&packed, max).unwrap(), Vec::<u8>::new());
        }
    }

    #[test]
    fn lzo_output_over_max_is_too_large() {
        let zeros = vec![0u8; 4 << 20];
        let packed = lzo_compress(&zeros).unwrap();
        assert!(packed.len() < 100_000);
        match lzo_decompress(&packed, (4 << 20) - 1) {
            Err(Error::TooLarge { what, max, .. }) => {
                assert_eq!(what, "lzo output");
                assert_eq!(max, (4 << 20) - 1);
            }
            other => panic!("{:?}", other.map(|v| v.len())),
        }
    }

    #[test]
    fn lzo_garbage_is_a_decode_error() {
        let text = c_like_text(5_000);
        let packed = lzo_compress(&text).unwrap();
        assert!(matches!(
            lzo_decompress(&packed[..packed.len() / 2], MAX_BLOB),
            Err(Error::Decode(_))
        ));
        let mut trailing = packed.clone();
        trailing.push(0);
        assert!(matches!(
            lzo_decompress(&trailing, MAX_BLOB),
            Err(Error::Decode(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
                                raw_len in 0u64..100_000) {
            let _ = lzo_decompress(&data, 1 << 20);
            let blob = Blob { codec: Codec::Lz4, raw_len, data: data.clone() };
            let _ = blob.unpack(1 << 20);
            let blob = Blob { codec: Codec::None, raw_len, data };
            let _ = blob.unpack(1 << 20);
        }
    }
}
