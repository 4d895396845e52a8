//! Tests of `hoardcc serve`'s `Stored` acknowledgements, over in-memory pipes with the
//! real gcc: with a shared store and a client that says `chunk-ack`, every `Chunks` pack
//! is answered with `Stored` naming the chunks it did not keep (a corrupt one here), in
//! order, before the job's own answer; a client without the cap gets none.

use super::tests::{expect_result, job, lane, options, project, settings, WAIT};
use super::*;
use crate::proto::chunk::{ChunkPack, Cut};
use crate::proto::compress::MAX_BLOB;
use crate::proto::msg::{ChunkId, Input, Message, CHUNKS_CAP, CHUNK_ACK_CAP};

#[tokio::test]
async fn chunk_packs_are_acknowledged_in_order_when_asked() {
    for acks in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let (proj, source, reference) = project(tmp.path());
        let settings = settings(tmp.path());
        let mut opts = options(tmp.path());
        opts.cache_dir = Some(tmp.path().join("store"));
        let (mut c, sr, sw) = lane();
        let client = async {
            let caps: &[&str] = if acks {
                &["lz4", CHUNKS_CAP, CHUNK_ACK_CAP]
            } else {
                &["lz4", CHUNKS_CAP]
            };
            let theirs = c.hello_with(caps).await;
            assert!(theirs.caps.iter().any(|c| c == CHUNK_ACK_CAP), "{theirs:?}");
            let cut = Cut::normalised(&source);
            assert!(
                cut.recipe.chunks.len() > 1,
                "foo.c's text is several chunks"
            );
            let mut pack = ChunkPack::pack(cut.chunks());
            let real = pack.chunks[0].id;
            let bad = ChunkId([7; 32]);
            pack.chunks[0].id = bad;
            c.send(&Message::Chunks(pack)).await;
            if acks {
                assert_eq!(
                    c.answer().await,
                    Message::Stored {
                        unshared: vec![bad]
                    }
                );
            }
            let mut j = job(1, "gcc", &proj, "src/foo.c", &source);
            j.source = Input::Chunked(cut.recipe.clone());
            j.cache = false;
            c.send(&Message::Job3(j.clone())).await;
            assert_eq!(
                c.answer().await,
                Message::Missing {
                    id: 1,
                    ids: vec![real]
                },
                "the corrupt chunk was not kept"
            );
            let again = ChunkPack::pack(cut.chunks().take(1));
            c.send(&Message::Chunks(again)).await;
            if acks {
                assert_eq!(c.answer().await, Message::Stored { unshared: vec![] });
            }
            c.send(&Message::Job3(j)).await;
            let r = expect_result(c.answer().await, 1);
            assert_eq!(r.exit_code, 0);
            assert!(r.outputs[0].data.unpack(MAX_BLOB).unwrap() == reference);
            c.hang_up();
        };
        let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
        served.unwrap();
    }
}

/// Protocol 3's recipes had another shape: a protocol-3 client is not offered chunks (it
/// sends whole blobs), a protocol-4 one is.
#[tokio::test]
async fn a_protocol_3_client_is_not_offered_chunks() {
    for (version, offered) in [(3, false), (PROTOCOL_VERSION, true)] {
        let tmp = tempfile::tempdir().unwrap();
        let settings = settings(tmp.path());
        let mut opts = options(tmp.path());
        opts.cache_dir = Some(tmp.path().join("store"));
        let (mut c, sr, sw) = lane();
        let client = async {
            let ours = Hello {
                version,
                min_version: MIN_PROTOCOL_VERSION,
                caps: vec!["lz4".into(), CHUNKS_CAP.into(), CHUNK_ACK_CAP.into()],
                slots: 0,
                load: 0,
                agent: "test client".into(),
            };
            frame::write_hello(c.w.as_mut().unwrap(), &ours)
                .await
                .unwrap();
            let theirs = tokio::time::timeout(WAIT, frame::read_hello(&mut c.r))
                .await
                .expect("server hello in time")
                .unwrap();
            for cap in [CHUNKS_CAP, CHUNK_ACK_CAP] {
                assert_eq!(
                    theirs.caps.iter().any(|c| c == cap),
                    offered,
                    "v{version} {cap}"
                );
            }
            c.hang_up();
        };
        let (served, ()) = tokio::join!(serve_with(sr, sw, &settings, &opts), client);
        served.unwrap();
    }
}
