//! Fuzz target `native`: the native protocol's decoding, as a server or client meets it on a
//! lane (`proto::frame`, `proto::msg`) and as payloads are unpacked (`proto::compress`).
//!
//! Input: one mode byte, then the mode's bytes.
//! - 0: a lane: magic + hello frame (`read_hello`), then message frames (`read_message`);
//! - 1 / 2: wrapper ⇄ mux frames (blocking framing), as `MuxRequest` / `MuxReply`;
//! - 3: a blob: codec byte, `raw_len` (u64 LE), `max` (u64 LE), data (`Blob::unpack`);
//! - 4: LZO data behind a `max` (u32 LE) (`lzo_decompress`).
//!
//! Properties: no panic; whatever decodes re-encodes and decodes to the same value; a blob
//! unpacks to exactly `raw_len <= max` bytes and packs back; nothing allocates beyond the
//! bound (run with `-malloc_limit_mb`).
#![no_main]

use hoardcc::proto::compress::{lzo_compress, lzo_decompress, MAX_BLOB};
use hoardcc::proto::frame::{self, blocking, MAX_FRAME};
use hoardcc::proto::msg::{Blob, Codec, Message, MuxReply, MuxRequest};
use hoardcc_fuzz::block_on;
use libfuzzer_sys::fuzz_target;

/// Frames read per input, at most (the fuzzer's inputs are small anyway).
const MAX_FRAMES: usize = 64;

fuzz_target!(
    init: hoardcc_fuzz::write_seeds_if_asked(hoardcc_fuzz::seeds::native),
    |data: &[u8]| {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        match mode % 5 {
            0 => lane(rest),
            1 => mux_stream::<MuxRequest>(rest, |m| match m {
                MuxRequest::Run { source, .. } => vec![source.clone()],
                _ => Vec::new(),
            }),
            2 => mux_stream::<MuxReply>(rest, |m| match m {
                MuxReply::Done(r) => result_blobs(r),
                _ => Vec::new(),
            }),
            3 => blob(rest),
            _ => lzo(rest),
        }
    }
);

fn lane(mut input: &[u8]) {
    let Ok(hello) = block_on(frame::read_hello(&mut input)) else {
        return;
    };
    // The hello round-trips through the writer.
    let mut again = Vec::new();
    block_on(frame::write_hello(&mut again, &hello)).expect("a decoded hello encodes");
    let back = block_on(frame::read_hello(&mut &again[..])).expect("an encoded hello decodes");
    assert_eq!(back, hello);
    for _ in 0..MAX_FRAMES {
        let Ok(Some(msg)) = block_on(frame::read_message(&mut input)) else {
            return;
        };
        let mut again = Vec::new();
        block_on(frame::write_message(&mut again, &msg)).expect("a decoded message encodes");
        let back = block_on(frame::read_message(&mut &again[..]))
            .expect("an encoded message decodes")
            .expect("and is there");
        assert_eq!(back, msg);
        let blobs = match &msg {
            Message::Job3(job) => std::iter::once(&job.source)
                .chain(job.context.iter().map(|c| &c.data))
                .filter_map(|i| i.as_whole().cloned())
                .collect(),
            Message::Job(job) => {
                let mut b = vec![job.source.clone()];
                b.extend(job.context.iter().map(|c| c.data.clone()));
                b
            }
            Message::Result3(r) => result_blobs(r),
            Message::Chunks(pack) => {
                // A pack unpacks within its bounds, or is refused; never a panic.
                let _ = pack.unpack();
                Vec::new()
            }
            Message::DeltaChunks(pack) => {
                // Against any dictionary: within its bounds (chunks corrupt, at worst), or
                // refused; never a panic.
                let _ = pack.unpack(&[]);
                let _ = pack.unpack(b"int x;\nint y;\n");
                Vec::new()
            }
            Message::Result(r) => result_blobs(&r.clone().into()),
            _ => Vec::new(),
        };
        blobs.iter().for_each(|b| check_blob(b, MAX_BLOB));
    }
}

fn result_blobs(r: &hoardcc::proto::msg::JobResult) -> Vec<Blob> {
    let mut b = vec![r.stdout.clone(), r.stderr.clone()];
    b.extend(r.outputs.iter().map(|o| o.data.clone()));
    b
}

fn mux_stream<T>(input: &[u8], blobs: impl Fn(&T) -> Vec<Blob>)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut r = input;
    for _ in 0..MAX_FRAMES {
        let Ok(Some(msg)) = blocking::read_message::<_, T>(&mut r) else {
            return;
        };
        let mut again = Vec::new();
        blocking::write_message(&mut again, &msg).expect("a decoded message encodes");
        let back: T = blocking::read_message(&mut &again[..])
            .expect("an encoded message decodes")
            .expect("and is there");
        assert_eq!(back, msg);
        blobs(&msg).iter().for_each(|b| check_blob(b, MAX_BLOB));
    }
    // The raw frame reader on the same bytes agrees on where frames end.
    let mut r = input;
    for _ in 0..MAX_FRAMES {
        match blocking::read_frame(&mut r, MAX_FRAME) {
            Ok(Some(f)) => assert!(f.len() <= MAX_FRAME as usize),
            _ => return,
        }
    }
}

fn blob(input: &[u8]) {
    if input.len() < 17 {
        return;
    }
    let codec = if input[0] & 1 == 1 {
        Codec::Lz4
    } else {
        Codec::None
    };
    let raw_len = u64::from_le_bytes(input[1..9].try_into().unwrap());
    let max = u64::from_le_bytes(input[9..17].try_into().unwrap());
    let data = input[17..].to_vec();
    // Also try an honest length, so the decoder itself is reached often.
    let honest = Blob {
        codec,
        raw_len: (data.len() as u64).saturating_mul(raw_len % 8 + 1),
        data: data.clone(),
    };
    check_blob(&honest, max.min(MAX_BLOB));
    check_blob(
        &Blob {
            codec,
            raw_len,
            data: data.clone(),
        },
        max,
    );
    // Packing round-trips.
    let packed = Blob::pack(&data);
    assert_eq!(packed.raw_len, data.len() as u64);
    assert_eq!(
        packed
            .unpack(data.len() as u64)
            .expect("a packed blob unpacks"),
        data
    );
}

/// Unpacks `b` under `max`: success means exactly `raw_len <= max` bytes, the same by both
/// entry points.
fn check_blob(b: &Blob, max: u64) {
    let got = b.unpack(max);
    if let Ok(out) = &got {
        assert!(
            b.raw_len <= max,
            "unpacked {} bytes past the bound {max}",
            b.raw_len
        );
        assert_eq!(out.len() as u64, b.raw_len);
    }
    let consumed = b.clone().into_unpacked(max);
    assert_eq!(got.as_ref().ok(), consumed.as_ref().ok());
}

fn lzo(input: &[u8]) {
    if input.len() < 4 {
        return;
    }
    // Small bounds, so the growing buffer meets its limit.
    let max = u64::from(u32::from_le_bytes(input[..4].try_into().unwrap()) % (4 << 20));
    let data = &input[4..];
    if let Ok(out) = lzo_decompress(data, max) {
        assert!(out.len() as u64 <= max || data.is_empty());
    }
    let packed = lzo_compress(data).expect("lzo compresses anything");
    assert_eq!(
        lzo_decompress(&packed, data.len() as u64).expect("lzo round-trips"),
        data
    );
}
