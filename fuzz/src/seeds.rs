//! Seed inputs built with hoardcc's own encoders, in the input layouts the targets read (see
//! each target's `//!`). Text seeds (host lists, argv, preprocessor output) live as plain
//! files under `corpus/`; these are the binary ones.

use hoardcc::proto::compress::lzo_compress;
use hoardcc::proto::distcc::{self, DistccRequest, DistccResponse};
use hoardcc::proto::frame::{self, blocking};
use hoardcc::proto::msg::{
    Blob, ContextFile, Hello, Input, Job, JobHeader, JobResult, JobSpec, Message, MuxReply,
    MuxRequest, OutputFile, SourceKind, Wire, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

use crate::block_on;

/// A directives-only translation unit as `gcc -E -fdirectives-only` writes it (built-ins
/// stripped), big enough that `Blob::pack` compresses it.
pub const DIRECTIVES_ONLY: &str = "# 0 \"src/geom.c\"\n# 0 \"/home/u/proj/build//\"\n\
# 0 \"<command-line>\"\n# 1 \"/usr/include/stdc-predef.h\" 1 3 4\n\
#define _STDC_PREDEF_H 1\n#define __STDC_IEC_559__ 1\n# 0 \"<command-line>\" 2\n\
# 1 \"src/geom.c\"\n# 1 \"src/geom.h\" 1\n#pragma once\n\
typedef struct { double x, y; } point;\ndouble dist(point a, point b);\n\
# 2 \"src/geom.c\" 2\n# 1 \"/usr/include/math.h\" 1 3 4\n#define _MATH_H 1\n\
extern double sqrt (double __x) __attribute__ ((__nothrow__ , __leaf__));\n\
# 3 \"src/geom.c\" 2\n#define SQ(v) ((v) * (v))\n\
double dist(point a, point b) { return sqrt(SQ(a.x - b.x) + SQ(a.y - b.y)); }\n\
double dist(point a, point b) { return sqrt(SQ(a.x - b.x) + SQ(a.y - b.y)); }\n";

fn hello(client: bool) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        min_version: MIN_PROTOCOL_VERSION,
        caps: if client {
            vec!["lz4".into()]
        } else {
            ["lz4", "directives-only", "heartbeat", "busy"]
                .map(String::from)
                .to_vec()
        },
        slots: if client { 0 } else { 8 },
        load: if client { 0 } else { 3 },
        agent: "hoardcc 0.1.0 on buildhost".into(),
    }
}

fn job() -> Job {
    Job {
        id: 7,
        header: JobHeader {
            compiler: "gcc".into(),
            args: [
            "-O2",
            "-g",
            "-Wall",
            "-fPIC",
            "-std=gnu11",
            "-DNDEBUG",
            "-gsplit-dwarf",
        ]
        .map(String::from)
        .to_vec(),
            assemble_only: false,
            cwd: "/home/u/proj/build".into(),
            source_name: "src/geom.c".into(),
            output_name: "CMakeFiles/geom.dir/src/geom.c.o".into(),
            extra_outputs: vec!["CMakeFiles/geom.dir/src/geom.c.dwo".into()],
        },
        source_kind: SourceKind::DirectivesOnly,
        source: Input::Whole(Blob::pack(DIRECTIVES_ONLY.as_bytes())),
        context: vec![ContextFile {
            name: "src/geom.h".into(),
            data: Input::Whole(Blob::pack(
                b"#pragma once\ntypedef struct { double x, y; } point;\n",
            )),
        }],
        env: vec![("LANG".into(), "en_US.UTF-8".into())],
        compiler_id: None,
        cache: false,
    }
}

fn object() -> Vec<u8> {
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x01\0\x3e\0".to_vec();
    elf.resize(600, 0);
    elf
}

fn result(exit_code: i32) -> JobResult {
    JobResult {
        id: 7,
        exit_code,
        stdout: Blob::empty(),
        stderr: Blob::pack(
            b"src/geom.c: In function 'dist':\nsrc/geom.c:4:5: warning: unused variable 'z' [-Wunused-variable]\n",
        ),
        outputs: if exit_code == 0 {
            vec![OutputFile {
                name: "CMakeFiles/geom.dir/src/geom.c.o".into(),
                data: Blob::pack(&object()),
            }]
        } else {
            Vec::new()
        },
        cached: false,
    }
}

/// A native lane as one side sends it: magic, hello frame, then message frames.
fn lane(client: bool, messages: &[Message]) -> Vec<u8> {
    let mut out = vec![0u8];
    block_on(frame::write_hello(&mut out, &hello(client))).expect("hello");
    for m in messages {
        block_on(frame::write_message(&mut out, m)).expect("message");
    }
    out
}

/// Wrapper ⇄ mux frames (blocking framing) behind the mode byte `mode`.
macro_rules! mux_frames {
    ($mode:expr, [$($item:expr),* $(,)?] $(,)?) => {{
        let mut out = vec![$mode];
        $(blocking::write_message(&mut out, &$item).expect("mux frame");)*
        out
    }};
}

/// The layout of the `native` target's blob mode: `3, codec, raw_len (u64 LE), max (u64 LE),
/// data`.
pub fn blob_input(blob: &Blob, max: u64) -> Vec<u8> {
    let mut out = vec![
        3u8,
        matches!(blob.codec, hoardcc::proto::msg::Codec::Lz4) as u8,
    ];
    out.extend_from_slice(&blob.raw_len.to_le_bytes());
    out.extend_from_slice(&max.to_le_bytes());
    out.extend_from_slice(&blob.data);
    out
}

/// Seeds of the `native` target.
pub fn native() -> Vec<(String, Vec<u8>)> {
    let spec = JobSpec {
        header: JobHeader {
            compiler: "g++".into(),
            args: ["-O2", "-std=c++17", "-fPIC"].map(String::from).to_vec(),
            assemble_only: false,
            cwd: "/home/u/proj".into(),
            source_name: "a.cpp".into(),
            output_name: "a.o".into(),
            extra_outputs: Vec::new(),
        },
        distcc_argv: ["g++", "-O2", "-c", "a.ii", "-o", "a.o"]
            .map(String::from)
            .to_vec(),
        env: vec![("LC_ALL".into(), "C".into())],
        context: vec![("a.cpp".into(), b"int main() {}\n".to_vec())],
        compiler_id: None,
        cache: true,
    };
    let source = Blob::pack(DIRECTIVES_ONLY.as_bytes());
    let mut lzo = vec![4u8];
    lzo.extend_from_slice(&(1u32 << 20).to_le_bytes());
    lzo.extend_from_slice(&lzo_compress(DIRECTIVES_ONLY.as_bytes()).expect("lzo"));
    vec![
        (
            "client-lane".into(),
            lane(
                true,
                &[
                    Message::Job3(job()),
                    Message::Ping { nonce: 42 },
                    Message::ListCompilers,
                ],
            ),
        ),
        (
            "client-lane-chunks".into(),
            {
                let cut = hoardcc::proto::chunk::Cut::normalised(DIRECTIVES_ONLY.as_bytes());
                let mut j = job();
                j.source = Input::Chunked(cut.recipe.clone());
                lane(
                    true,
                    &[
                        Message::Identity {
                            compiler: "g++".into(),
                            id: hoardcc::proto::identity::CompilerId {
                                version: "12.2.0".into(),
                                target: "x86_64-linux-gnu".into(),
                                configured: "Thread model: posix".into(),
                                binaries: None,
                            },
                        },
                        Message::Chunks(hoardcc::proto::chunk::ChunkPack::pack(cut.chunks())),
                        Message::DeltaChunks(hoardcc::proto::chunk::DeltaPack::pack(
                            cut.chunks(),
                            &[(
                                hoardcc::proto::chunk_id::ChunkId::of(b"int x;\n"),
                                &b"int x;\n"[..],
                            )],
                        )),
                        Message::Job3(j),
                    ],
                )
            },
        ),
        (
            "server-lane".into(),
            lane(
                false,
                &[
                    Message::Heartbeat { id: 7 },
                    Message::Result3(result(0)),
                    Message::Result3(result(1)),
                    Message::Busy { id: 8 },
                    Message::Refused {
                        id: 9,
                        reason: "refusing argument \"-fplugin=x.so\"".into(),
                    },
                    Message::ServerError {
                        id: 10,
                        message: "No space left on device".into(),
                    },
                    Message::Pong { nonce: 42 },
                    Message::Mismatch {
                        id: 11,
                        reason: "no compiler matching gcc 12.2.0 (x86_64-linux-gnu); \
                                 gcc here is 13.1.0 (x86_64-linux-gnu)"
                            .into(),
                    },
                    Message::Compilers {
                        list: vec![hoardcc::proto::identity::OfferedCompiler {
                            name: "gcc-12".into(),
                            path: "/usr/bin/gcc-12".into(),
                            id: hoardcc::proto::identity::CompilerId {
                                version: "12.2.0".into(),
                                target: "x86_64-linux-gnu".into(),
                                configured: "Configured with: ../src/configure -v\nThread model: posix"
                                    .into(),
                                binaries: None,
                            },
                            extra: false,
                        }],
                    },
                    Message::Missing {
                        id: 11,
                        ids: vec![hoardcc::proto::chunk_id::ChunkId::of(b"int x;\n")],
                    },
                    Message::Stored {
                        unshared: vec![hoardcc::proto::chunk_id::ChunkId::of(b"int y;\n")],
                    },
                ],
            ),
        ),
        (
            "mux-requests".into(),
            mux_frames!(
                1u8,
                [
                    MuxRequest::Reserve {
                        hosts: "u@build1/8 u@build2/4,lzo localhost/2 --randomize".into(),
                        file: "a.cpp".into(),
                        client_version: "0.1.0".into(),
                        compiler: Some(hoardcc::proto::msg::LocalCompiler {
                            name: "g++".into(),
                            path: "/usr/bin/g++".into(),
                        }),
                    },
                    MuxRequest::Run {
                        spec: Box::new(spec),
                        source: source.clone(),
                        recipe: None,
                    },
                    MuxRequest::Status,
                    MuxRequest::Stop,
                ],
            ),
        ),
        (
            "mux-replies".into(),
            mux_frames!(
                2u8,
                [
                    MuxReply::Reserved {
                        host: "u@build1".into(),
                        wire: Wire::Native
                    },
                    MuxReply::Reserved {
                        host: "build3:3632".into(),
                        wire: Wire::Distcc { lzo: true }
                    },
                    MuxReply::Local {
                        reason: "linking (no -c or -S)".into()
                    },
                    MuxReply::Done(result(0)),
                    MuxReply::Failed {
                        message: "connection reset".into(),
                        exit_code: 103
                    },
                    MuxReply::Status(Box::new(hoardcc::proto::status::StatusReport {
                        version: "0.1.0".into(),
                        pid: 42,
                        uptime_secs: 7,
                        wrappers: 1,
                        queued: 0,
                        local_running: 0,
                        hosts: vec![],
                        jobs: vec![],
                        jobs_in_flight: 0,
                        failures: vec![],
                    })),
                    MuxReply::Stopping,
                    MuxReply::WrongVersion {
                        mux_version: "0.0.9".into()
                    },
                    MuxReply::Rewire {
                        wire: hoardcc::proto::msg::Wire::Distcc { lzo: true },
                    },
                ],
            ),
        ),
        ("blob-lz4".into(), blob_input(&source, 1 << 30)),
        (
            "blob-raw".into(),
            blob_input(&Blob::raw(b"int x;\n".to_vec()), 1 << 20),
        ),
        (
            "blob-object".into(),
            blob_input(&Blob::pack(&object()), 4096),
        ),
        ("lzo".into(), lzo),
    ]
}

/// Seeds of the `distcc` target: `0, request` or `1|2, response of that version`.
pub fn distcc() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for version in [1, 2] {
        let req = DistccRequest {
            version,
            argv: [
                "x86_64-linux-gnu-gcc-12",
                "-O2",
                "-g",
                "-c",
                "geom.i",
                "-o",
                "geom.o",
            ]
            .map(String::from)
            .to_vec(),
            doti: DIRECTIVES_ONLY.as_bytes().to_vec(),
        };
        let mut out = vec![0u8];
        block_on(distcc::write_request(&mut out, &req)).expect("request");
        seeds.push((format!("request-v{version}"), out));
        for status in [0, 0x100] {
            let resp = DistccResponse {
                version,
                status,
                stderr: b"geom.c:3:1: warning: no newline at end of file\n".to_vec(),
                stdout: Vec::new(),
                doto: object(),
            };
            let mut out = vec![version as u8];
            block_on(distcc::write_response(&mut out, &resp)).expect("response");
            seeds.push((format!("response-v{version}-status{status:x}"), out));
        }
    }
    seeds
}
