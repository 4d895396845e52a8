//! The stock distcc wire protocol, versions 1 (plain) and 2 (LZO bulk): lets a stock
//! `distcc` client use a hoardcc server and hoardcc talk to a stock `distccd`.
//! Neighbours: `proto::compress` (LZO1X), `subsystem` (serves distcc requests),
//! `wrapper`/`mux` (the client side).
//!
//! A packet is a 12-byte header, 4 ASCII token characters and 8 lowercase hex digits
//! (a `u32`), followed for strings and bulk data by a body of that many bytes (distcc
//! `rpc.c`). Request: `DIST ver`, `ARGC n`, n × `ARGV`, `DOTI`. Response: `DONE ver`,
//! `STAT` (raw wait status), `SERR`, `SOUT`, `DOTO` — `DOTO 00000000` when the compile
//! failed (distcc `serve.c`, `clirpc.c`). In version 2 the bulk bodies (DOTI, SERR,
//! SOUT, DOTO) are LZO1X-compressed and the length is the compressed one; an empty
//! payload is sent as length 0, uncompressed (`doc/protocol-2.txt`). Version 3 (pump
//! mode) is not supported.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::compress::{lzo_compress, lzo_decompress};
use super::{escape_preview, Error};

/// Most arguments accepted in one request.
pub const MAX_ARGC: u32 = 10_000;
/// Longest single argument accepted.
pub const MAX_ARG_LEN: u32 = 1 << 20;
/// Largest bulk payload (compressed or decoded) accepted: 512 MiB.
pub const MAX_BULK: u32 = 512 << 20;
/// Most argument bytes accepted in one request, all arguments together.
const MAX_ARGV_TOTAL: u64 = 64 << 20;
/// Header size: 4 token characters + 8 hex digits.
const HEADER_LEN: usize = 12;
/// Bodies up to this size are copied into the header buffer; bigger ones are written
/// directly.
const COALESCE_LIMIT: usize = 64 << 10;
/// The initial buffer for a body; it grows as bytes really arrive.
const INITIAL_BODY_CAPACITY: usize = 1 << 20;

/// A compile request as a stock distcc client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistccRequest {
    /// Protocol version: 1 (plain) or 2 (LZO).
    pub version: u32,
    /// The compiler command line, compiler first (distcc rewrites input and output on
    /// the server).
    pub argv: Vec<String>,
    /// The preprocessed source, decoded.
    pub doti: Vec<u8>,
}

/// A compile result as a stock distcc server sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistccResponse {
    /// Protocol version: the request's.
    pub version: u32,
    /// Raw wait status, e.g. exit 1 = `0x100`; see [`wait_status_from_exit_code`].
    pub status: i32,
    /// The compiler's stderr, decoded.
    pub stderr: Vec<u8>,
    /// The compiler's stdout, decoded.
    pub stdout: Vec<u8>,
    /// The object file, decoded; empty when `status != 0`.
    pub doto: Vec<u8>,
}

/// Builds outgoing packets, copying small bodies so that they leave in few writes.
struct Out {
    buf: Vec<u8>,
    lzo: bool,
}

impl Out {
    fn new(version: u32) -> Result<Out, Error> {
        check_version(version)?;
        Ok(Out {
            buf: Vec::with_capacity(4096),
            lzo: version == 2,
        })
    }

    fn token(&mut self, token: &[u8; 4], value: u32) {
        self.buf.extend_from_slice(token);
        self.buf
            .extend_from_slice(format!("{value:08x}").as_bytes());
    }

    /// Length of `body` as a header value.
    fn len_of(what: &'static str, body: &[u8]) -> Result<u32, Error> {
        u32::try_from(body.len()).map_err(|_| Error::TooLarge {
            what,
            len: body.len() as u64,
            max: u32::MAX.into(),
        })
    }

    fn string(&mut self, token: &'static str, s: &str) -> Result<(), Error> {
        let len = Self::len_of(token, s.as_bytes())?;
        self.token(token_bytes(token), len);
        self.buf.extend_from_slice(s.as_bytes());
        Ok(())
    }

    /// Adds a bulk packet: compressed in version 2 unless empty.
    async fn bulk<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        token: &'static str,
        data: &[u8],
    ) -> Result<(), Error> {
        let compressed;
        let body = if self.lzo && !data.is_empty() {
            compressed = lzo_compress(data)?;
            &compressed[..]
        } else {
            data
        };
        let len = Self::len_of(token, body)?;
        self.token(token_bytes(token), len);
        if body.len() <= COALESCE_LIMIT {
            self.buf.extend_from_slice(body);
        } else {
            w.write_all(&self.buf).await?;
            self.buf.clear();
            w.write_all(body).await?;
        }
        Ok(())
    }

    async fn finish<W: AsyncWrite + Unpin>(self, w: &mut W) -> Result<(), Error> {
        w.write_all(&self.buf).await?;
        w.flush().await?;
        Ok(())
    }
}

/// The 4 bytes of a token name.
fn token_bytes(token: &'static str) -> &'static [u8; 4] {
    token
        .as_bytes()
        .try_into()
        .expect("distcc token names are 4 bytes")
}

/// Refuses protocol versions other than 1 and 2.
fn check_version(version: u32) -> Result<(), Error> {
    match version {
        1 | 2 => Ok(()),
        3 => Err(Error::Unsupported(
            "distcc protocol 3 (pump mode, ',cpp'): use plain or ',lzo' hosts".into(),
        )),
        v => Err(Error::Unsupported(format!(
            "distcc protocol {v} (only 1 and 2 are spoken)"
        ))),
    }
}

/// Reads exactly `buf.len()` bytes; an early end of stream is [`Error::Truncated`].
async fn read_exact_or<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), Error> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::Truncated { what }),
        Err(e) => Err(e.into()),
    }
}

/// Parses a 12-byte header that must carry `token`.
fn parse_header(header: &[u8; HEADER_LEN], token: &'static str) -> Result<u32, Error> {
    if &header[..4] != token.as_bytes() {
        return Err(Error::Derailed {
            expected: token.into(),
            got: escape_preview(header),
        });
    }
    let digits = &header[4..];
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(Error::Decode(format!(
            "distcc {token} value is not 8 hex digits: \"{}\"",
            escape_preview(header)
        )));
    }
    // Eight hex digits always fit a u32.
    let text = std::str::from_utf8(digits).map_err(|e| Error::Decode(e.to_string()))?;
    u32::from_str_radix(text, 16).map_err(|e| Error::Decode(e.to_string()))
}

/// Reads the header of the packet `token` and returns its value.
async fn read_token<R: AsyncRead + Unpin>(r: &mut R, token: &'static str) -> Result<u32, Error> {
    let mut header = [0u8; HEADER_LEN];
    read_exact_or(r, &mut header, token).await?;
    parse_header(&header, token)
}

/// Reads `len` body bytes (already bounded by the caller).
async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    len: u32,
    what: &'static str,
) -> Result<Vec<u8>, Error> {
    let mut body = Vec::with_capacity((len as usize).min(INITIAL_BODY_CAPACITY));
    (&mut *r).take(len.into()).read_to_end(&mut body).await?;
    if body.len() != len as usize {
        return Err(Error::Truncated { what });
    }
    Ok(body)
}

/// Reads a bulk packet (`DOTI`, `SERR`, `SOUT`, `DOTO`), decompressing in version 2.
async fn read_bulk<R: AsyncRead + Unpin>(
    r: &mut R,
    token: &'static str,
    lzo: bool,
) -> Result<Vec<u8>, Error> {
    let len = read_token(r, token).await?;
    if len > MAX_BULK {
        return Err(Error::TooLarge {
            what: token,
            len: len.into(),
            max: MAX_BULK.into(),
        });
    }
    let body = read_body(r, len, token).await?;
    if lzo && !body.is_empty() {
        lzo_decompress(&body, MAX_BULK.into())
    } else {
        Ok(body)
    }
}

/// Writes a distcc request: `DIST`, `ARGC`, the `ARGV`s, `DOTI`; then flushes.
///
/// # Errors
/// [`Error::Unsupported`] for versions other than 1 and 2 (nothing is written);
/// [`Error::TooLarge`] for more than `u32::MAX` bytes in one packet;
/// [`Error::Compress`], [`Error::Io`].
///
/// # Cancel safety
/// Not cancel safe: a cancelled write leaves a partial request on the stream.
pub async fn write_request<W: AsyncWrite + Unpin>(
    w: &mut W,
    req: &DistccRequest,
) -> Result<(), Error> {
    let mut out = Out::new(req.version)?;
    out.token(b"DIST", req.version);
    let argc = u32::try_from(req.argv.len()).map_err(|_| Error::TooLarge {
        what: "ARGC",
        len: req.argv.len() as u64,
        max: u32::MAX.into(),
    })?;
    out.token(b"ARGC", argc);
    for arg in &req.argv {
        out.string("ARGV", arg)?;
    }
    out.bulk(w, "DOTI", &req.doti).await?;
    out.finish(w).await
}

/// Reads a distcc request, starting with its `DIST` packet.
///
/// # Errors
/// [`Error::Unsupported`] for versions other than 1 and 2; [`Error::Derailed`] if a
/// packet is not the expected one; [`Error::TooLarge`] past [`MAX_ARGC`],
/// [`MAX_ARG_LEN`], 64 MiB of arguments in all, or [`MAX_BULK`] (checked before
/// allocating); [`Error::Truncated`]; [`Error::Decode`] for non-UTF-8 arguments, bad hex
/// or bad LZO; [`Error::Io`].
///
/// # Cancel safety
/// Not cancel safe.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<DistccRequest, Error> {
    let version = read_token(r, "DIST").await?;
    check_version(version)?;
    let argc = read_token(r, "ARGC").await?;
    if argc > MAX_ARGC {
        return Err(Error::TooLarge {
            what: "ARGC",
            len: argc.into(),
            max: MAX_ARGC.into(),
        });
    }
    let mut argv = Vec::with_capacity(argc as usize);
    let mut total: u64 = 0;
    for _ in 0..argc {
        let len = read_token(r, "ARGV").await?;
        if len > MAX_ARG_LEN {
            return Err(Error::TooLarge {
                what: "ARGV",
                len: len.into(),
                max: MAX_ARG_LEN.into(),
            });
        }
        total += u64::from(len);
        if total > MAX_ARGV_TOTAL {
            return Err(Error::TooLarge {
                what: "distcc arguments in all",
                len: total,
                max: MAX_ARGV_TOTAL,
            });
        }
        let body = read_body(r, len, "ARGV").await?;
        let arg = String::from_utf8(body)
            .map_err(|e| Error::Decode(format!("distcc argument is not UTF-8: {e}")))?;
        argv.push(arg);
    }
    let doti = read_bulk(r, "DOTI", version == 2).await?;
    Ok(DistccRequest {
        version,
        argv,
        doti,
    })
}

/// Writes a distcc response: `DONE`, `STAT`, `SERR`, `SOUT`, `DOTO`; then flushes.
///
/// When `status != 0` the object is not sent (`DOTO 00000000`), as distccd does and as
/// the distcc client expects (it reads no `DOTO` body after a failed compile).
///
/// # Errors
/// As [`write_request`].
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    resp: &DistccResponse,
) -> Result<(), Error> {
    let mut out = Out::new(resp.version)?;
    out.token(b"DONE", resp.version);
    out.token(b"STAT", resp.status as u32);
    out.bulk(w, "SERR", &resp.stderr).await?;
    out.bulk(w, "SOUT", &resp.stdout).await?;
    if resp.status == 0 {
        out.bulk(w, "DOTO", &resp.doto).await?;
    } else {
        out.token(b"DOTO", 0);
    }
    out.finish(w).await
}

/// Reads a distcc response to a request of protocol `version`.
///
/// # Errors
/// [`Error::Version`] if the server answers in another version (distcc: "got version
/// X not Y in response from server"); otherwise as [`read_request`].
///
/// # Cancel safety
/// Not cancel safe.
pub async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    version: u32,
) -> Result<DistccResponse, Error> {
    check_version(version)?;
    let theirs = read_token(r, "DONE").await?;
    if theirs != version {
        return Err(Error::Version {
            ours: version,
            theirs_min: theirs,
            theirs_max: theirs,
        });
    }
    let lzo = version == 2;
    let status = read_token(r, "STAT").await? as i32;
    let stderr = read_bulk(r, "SERR", lzo).await?;
    let stdout = read_bulk(r, "SOUT", lzo).await?;
    // distccd sends `DOTO 00000000` after a failure; a body is read (bounded) all the
    // same, so a stray one cannot desynchronise the stream.
    let doto = read_bulk(r, "DOTO", lzo).await?;
    Ok(DistccResponse {
        version,
        status,
        stderr,
        stdout,
        doto,
    })
}

/// Turns a raw wait status into a shell-style exit code: the code if the process
/// exited, 128 + signal if a signal killed (or stopped) it.
pub fn exit_code_from_wait_status(status: i32) -> i32 {
    let low = status & 0x7f;
    let high = (status >> 8) & 0xff;
    match low {
        0 => high,          // exited
        0x7f => 128 + high, // stopped by signal `high`
        sig => 128 + sig,   // killed by signal
    }
}

/// Turns an exit code into the raw wait status of a process that exited with it
/// (`W_EXITCODE(code, 0)`; only the low 8 bits of `code` survive, as with `exit()`).
/// A code of 128 + signal stays an exit code: it is what the compiler run reported.
pub fn wait_status_from_exit_code(code: i32) -> i32 {
    (code & 0xff) << 8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: u32) -> DistccRequest {
        DistccRequest {
            version,
            argv: vec!["gcc".into(), "-c".into(), "foo.c".into()],
            doti: b"int x = 1;\n".to_vec(),
        }
    }

    const REQUEST_V1: &[u8] = b"DIST00000001ARGC00000003ARGV00000003gccARGV00000002-c\
ARGV00000005foo.cDOTI0000000bint x = 1;\n";

    #[tokio::test]
    async fn request_v1_has_the_exact_distcc_bytes() {
        let mut wire = Vec::new();
        write_request(&mut wire, &request(1)).await.unwrap();
        assert_eq!(wire, REQUEST_V1, "{}", escape_preview(&wire));
        assert_eq!(
            read_request(&mut &REQUEST_V1[..]).await.unwrap(),
            request(1)
        );
    }

    #[tokio::test]
    async fn response_v1_has_the_exact_distcc_bytes() {
        let ok = DistccResponse {
            version: 1,
            status: 0,
            stderr: b"warn\n".to_vec(),
            stdout: vec![],
            doto: b"\x7fELF".to_vec(),
        };
        let mut wire = Vec::new();
        write_response(&mut wire, &ok).await.unwrap();
        let expected: &[u8] = b"DONE00000001STAT00000000SERR00000005warn\n\
SOUT00000000DOTO00000004\x7fELF";
        assert_eq!(wire, expected, "{}", escape_preview(&wire));
        assert_eq!(read_response(&mut &wire[..], 1).await.unwrap(), ok);
    }

    #[tokio::test]
    async fn failed_compile_sends_doto_zero_and_keeps_stderr() {
        let failed = DistccResponse {
            version: 1,
            status: wait_status_from_exit_code(1),
            stderr: b"foo.c:1:1: error: expected ';'\n".to_vec(),
            stdout: b"out".to_vec(),
            doto: b"stale object".to_vec(),
        };
        let mut wire = Vec::new();
        write_response(&mut wire, &failed).await.unwrap();
        assert!(wire.starts_with(b"DONE00000001STAT00000100SERR0000001f"));
        assert!(wire.ends_with(b"SOUT00000003outDOTO00000000"));
        let back = read_response(&mut &wire[..], 1).await.unwrap();
        assert_eq!(back.status, 0x100);
        assert_eq!(back.stderr, failed.stderr);
        assert_eq!(back.stdout, b"out");
        assert!(back.doto.is_empty());
    }

    #[tokio::test]
    async fn v2_round_trips_with_lzo_bodies() {
        let source: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("int var_{i} = {};\n", i % 17).into_bytes())
            .collect();
        let req = DistccRequest {
            version: 2,
            argv: vec!["cc".into(), "-O2".into(), "-c".into(), "big.c".into()],
            doti: source.clone(),
        };
        let mut wire = Vec::new();
        write_request(&mut wire, &req).await.unwrap();
        assert!(wire.len() < source.len() / 2, "DOTI was not compressed");
        assert_eq!(read_request(&mut &wire[..]).await.unwrap(), req);

        let resp = DistccResponse {
            version: 2,
            status: 0,
            stderr: b"big.c: note: something\n".to_vec(),
            stdout: vec![],
            doto: source,
        };
        let mut wire = Vec::new();
        write_response(&mut wire, &resp).await.unwrap();
        // Empty payloads stay uncompressed with length 0.
        assert!(wire
            .windows(b"SOUT00000000DOTO".len())
            .any(|w| w == b"SOUT00000000DOTO"));
        assert_eq!(read_response(&mut &wire[..], 2).await.unwrap(), resp);
    }

    #[tokio::test]
    async fn v2_over_a_duplex_pipe() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let req = DistccRequest {
            version: 2,
            argv: vec!["gcc".into(), "-c".into(), "x.c".into()],
            doti: vec![b'x'; 300_000],
        };
        let sent = req.clone();
        let writer = tokio::spawn(async move { write_request(&mut a, &sent).await });
        assert_eq!(read_request(&mut b).await.unwrap(), req);
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn truncation_anywhere_is_truncated() {
        for cut in [0, 5, 12, 20, 40, REQUEST_V1.len() - 1] {
            let err = read_request(&mut &REQUEST_V1[..cut]).await.unwrap_err();
            assert!(matches!(err, Error::Truncated { .. }), "cut {cut}: {err:?}");
        }
        let err = read_response(&mut &b"DONE00000001STAT000"[..], 1)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Truncated { what: "STAT" }), "{err:?}");
    }

    #[tokio::test]
    async fn wrong_token_is_derailed() {
        let err = read_request(&mut &b"DIST00000001ARGV00000003gcc"[..])
            .await
            .unwrap_err();
        match err {
            Error::Derailed { expected, got } => {
                assert_eq!(expected, "ARGC");
                assert_eq!(got, "ARGV00000003");
            }
            other => panic!("{other:?}"),
        }
        let err = read_request(&mut &b"Welcome to buildbox\n"[..])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Derailed { ref got, .. } if got == "Welcome to b"),
            "{err:?}"
        );
        let err = read_response(&mut &b"DIST00000001"[..], 1)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Derailed { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn bad_hex_is_a_decode_error() {
        let err = read_request(&mut &b"DIST0000000gARGC"[..])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{err:?}");
        let err = read_request(&mut &b"DIST -000001"[..]).await.unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{err:?}");
        // Uppercase hex is what strtoul accepts too.
        let mut wire = b"DIST00000001ARGC00000001ARGV0000000A".to_vec();
        wire.extend_from_slice(b"0123456789DOTI00000000");
        let req = read_request(&mut &wire[..]).await.unwrap();
        assert_eq!(req.argv, ["0123456789"]);
    }

    #[tokio::test]
    async fn oversized_counts_are_rejected_before_reading() {
        // Each input ends right after the offending header: reading on would truncate.
        let err = read_request(&mut &b"DIST00000001ARGC00002711"[..])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    what: "ARGC",
                    len: 10_001,
                    max: 10_000
                }
            ),
            "{err:?}"
        );
        let err = read_request(&mut &b"DIST00000001ARGCffffffff"[..])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { what: "ARGC", .. }),
            "{err:?}"
        );
        let err = read_request(&mut &b"DIST00000001ARGC00000001ARGV00100001"[..])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { what: "ARGV", .. }),
            "{err:?}"
        );
        let err = read_request(&mut &b"DIST00000001ARGC00000000DOTI20000001"[..])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { what: "DOTI", .. }),
            "{err:?}"
        );
        let err = read_response(&mut &b"DONE00000002STAT00000000SERRffffffff"[..], 2)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { what: "SERR", .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn argument_bytes_are_bounded_in_all() {
        // 65 arguments of 1 MiB each pass one by one but not together.
        let mut wire = b"DIST00000001ARGC00000041".to_vec();
        let arg = vec![b'a'; 1 << 20];
        for _ in 0..65 {
            wire.extend_from_slice(b"ARGV00100000");
            wire.extend_from_slice(&arg);
        }
        let err = read_request(&mut &wire[..]).await.unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { len, .. } if len == 65 << 20),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn other_versions_are_unsupported() {
        for v in [0u32, 3, 4] {
            let wire = format!("DIST{v:08x}ARGC00000000DOTI00000000");
            let err = read_request(&mut wire.as_bytes()).await.unwrap_err();
            assert!(matches!(err, Error::Unsupported(_)), "v{v}: {err:?}");
            let mut sink = Vec::new();
            let err = write_request(&mut sink, &request(v)).await.unwrap_err();
            assert!(matches!(err, Error::Unsupported(_)), "v{v}: {err:?}");
            assert!(sink.is_empty());
        }
        let err = read_response(&mut &b"DONE00000002"[..], 1)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Version {
                    ours: 1,
                    theirs_min: 2,
                    theirs_max: 2
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn non_utf8_argument_is_a_decode_error() {
        let wire = b"DIST00000001ARGC00000001ARGV00000002\xff\xfeDOTI00000000";
        let err = read_request(&mut &wire[..]).await.unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{err:?}");
    }

    #[test]
    fn wait_status_conversions() {
        assert_eq!(exit_code_from_wait_status(0), 0);
        assert_eq!(exit_code_from_wait_status(0x100), 1);
        assert_eq!(exit_code_from_wait_status(0x0400), 4);
        assert_eq!(exit_code_from_wait_status(9), 128 + 9); // SIGKILL
        assert_eq!(exit_code_from_wait_status(11 | 0x80), 128 + 11); // SIGSEGV, core dumped
        assert_eq!(exit_code_from_wait_status(0x137f), 128 + 0x13); // stopped
        assert_eq!(wait_status_from_exit_code(0), 0);
        assert_eq!(wait_status_from_exit_code(1), 0x100);
        assert_eq!(wait_status_from_exit_code(255), 0xff00);
        for code in 0..=255 {
            assert_eq!(
                exit_code_from_wait_status(wait_status_from_exit_code(code)),
                code
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let _ = read_request(&mut &data[..]).await;
                let _ = read_response(&mut &data[..], 1).await;
                let _ = read_response(&mut &data[..], 2).await;
                let _ = crate::proto::frame::read_frame(&mut &data[..], 1 << 16).await;
                let _ = crate::proto::frame::read_message(&mut &data[..]).await;
                let _ = crate::proto::frame::read_hello(&mut &data[..]).await;
            });
            let _ = crate::proto::frame::blocking::read_frame(&mut &data[..], 1 << 16);
            let _: Result<Option<crate::proto::msg::Message>, _> =
                crate::proto::frame::blocking::read_message(&mut &data[..]);
        }

        #[test]
        fn structured_garbage_never_panics(
            version in 1u32..=2,
            argv in proptest::collection::vec("[ -~]{0,20}", 0..6),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            // A valid prefix followed by random bytes reaches the deeper decoders (LZO).
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut wire = format!("DIST{version:08x}ARGC{:08x}", argv.len()).into_bytes();
            for a in &argv {
                wire.extend_from_slice(format!("ARGV{:08x}{a}", a.len()).as_bytes());
            }
            wire.extend_from_slice(format!("DOTI{:08x}", tail.len()).as_bytes());
            wire.extend_from_slice(&tail);
            let got = rt.block_on(read_request(&mut &wire[..]));
            if version == 1 {
                let req = got.unwrap();
                proptest::prop_assert_eq!(req.argv, argv);
                proptest::prop_assert_eq!(req.doti, tail);
            }
        }
    }
}
