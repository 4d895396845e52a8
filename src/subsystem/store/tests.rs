//! Unit tests of the store: ids checked, corruption detected and deleted, the cap and the
//! LRU order kept, concurrent writers, and the directory's permissions.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::*;

fn chunk(seed: u32, len: usize) -> (ChunkId, Vec<u8>) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed) as u8 ^ (seed >> 3) as u8)
        .chain(seed.to_le_bytes())
        .collect();
    (ChunkId::of(&data), data)
}

fn open(cap: u64) -> (tempfile::TempDir, Store) {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(&root.path().join("hoardcc"), cap).unwrap();
    (root, store)
}

/// Bytes in the store's files as `du` would count them (excluding `usage` and `lock`).
fn on_disk(store: &Store) -> u64 {
    let mut total = 0;
    for kind in ["chunks", "results"] {
        let Ok(fans) = fs::read_dir(store.dir().join(kind)) else {
            continue;
        };
        for fan in fans {
            for f in fs::read_dir(fan.unwrap().path()).unwrap() {
                total += f.unwrap().metadata().unwrap().len();
            }
        }
    }
    total
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn put_get_has_round_trip_with_private_modes() {
    let (_root, store) = open(DEFAULT_CAP);
    let (id, data) = chunk(1, 5000);
    assert!(!store.has(&id));
    assert_eq!(store.get(&id), None);
    store.put(&id, &data).unwrap();
    assert!(store.has(&id));
    assert_eq!(store.get(&id).as_deref(), Some(&data[..]));
    // Again: a no-op.
    store.put(&id, &data).unwrap();
    let path = store.chunk_path(&id);
    assert!(path.ends_with(format!("chunks/{}/{id}", &id.to_hex()[..2])));
    assert_eq!(mode(store.dir()), 0o700);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn put_refuses_bytes_that_are_not_the_id() {
    let (_root, store) = open(DEFAULT_CAP);
    let (id, _) = chunk(1, 100);
    let (_, other) = chunk(2, 100);
    assert!(matches!(
        store.put(&id, &other),
        Err(StoreError::IdMismatch(i)) if i == id
    ));
    assert!(!store.chunk_path(&id).exists());
    assert!(!store.has(&id));
}

#[test]
fn a_corrupted_or_torn_chunk_is_deleted_and_missing() {
    let (_root, store) = open(DEFAULT_CAP);
    let (a, data_a) = chunk(1, 3000);
    let (b, data_b) = chunk(2, 3000);
    store.put(&a, &data_a).unwrap();
    store.put(&b, &data_b).unwrap();
    // One flipped byte in a; b torn in half.
    let mut bad = data_a.clone();
    bad[1234] ^= 0x40;
    fs::write(store.chunk_path(&a), &bad).unwrap();
    fs::write(store.chunk_path(&b), &data_b[..1500]).unwrap();
    for id in [a, b] {
        assert!(store.has(&id), "has() is only a hint");
        assert_eq!(store.get(&id), None);
        assert!(!store.chunk_path(&id).exists(), "corrupt file deleted");
        assert!(!store.has(&id));
    }
    // Asked for again, it is stored whole.
    store.put(&a, &data_a).unwrap();
    assert_eq!(store.get(&a).as_deref(), Some(&data_a[..]));
}

#[test]
fn keyed_entries_round_trip_replace_and_detect_corruption() {
    let (_root, store) = open(DEFAULT_CAP);
    let key = [7u8; 32];
    assert_eq!(store.get_keyed(&key), None);
    store.put_keyed(&key, b"first").unwrap();
    assert_eq!(store.get_keyed(&key).as_deref(), Some(&b"first"[..]));
    store.put_keyed(&key, b"second one").unwrap();
    assert_eq!(store.get_keyed(&key).as_deref(), Some(&b"second one"[..]));
    store.put_keyed(&key, b"").unwrap();
    assert_eq!(store.get_keyed(&key).as_deref(), Some(&b""[..]));

    store.put_keyed(&key, b"payload bytes").unwrap();
    let path = store.keyed_path(&key);
    let mut raw = fs::read(&path).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    fs::write(&path, &raw).unwrap();
    assert_eq!(store.get_keyed(&key), None);
    assert!(!path.exists());
    // Shorter than the header.
    fs::write(&path, b"hoardcE1").unwrap();
    assert_eq!(store.get_keyed(&key), None);
    assert!(!path.exists());
}

#[test]
fn the_cap_is_honoured_after_every_write() {
    let cap = 64 << 10;
    let (_root, store) = open(cap);
    let mut ids = Vec::new();
    for seed in 0..100 {
        let (id, data) = chunk(seed, 4000);
        store.put(&id, &data).unwrap();
        let disk = on_disk(&store);
        assert!(
            disk <= cap,
            "after put {seed}: {disk} bytes on disk > cap {cap}"
        );
        assert_eq!(
            store.estimated_size(),
            disk,
            "one writer: the estimate is exact"
        );
        assert!(store.has(&id), "the newest chunk survives");
        ids.push(id);
    }
    let kept = ids
        .iter()
        .filter(|id| store.chunk_path(id).exists())
        .count();
    assert!((10..=16).contains(&kept), "{kept} chunks kept");
    // Keyed entries count against the same cap.
    for k in 0..20u8 {
        store.put_keyed(&[k; 32], &[k; 4000]).unwrap();
        assert!(on_disk(&store) <= cap);
    }
    assert!(matches!(
        store.put_keyed(&[0; 32], &vec![0; cap as usize]),
        Err(StoreError::TooLarge { .. })
    ));
    let (big, data) = chunk(9999, cap as usize + 1);
    assert!(matches!(
        store.put(&big, &data),
        Err(StoreError::TooLarge { .. })
    ));
}

#[test]
fn eviction_takes_the_least_recently_used_first() {
    // Room for ten 1000-byte chunks.
    let (_root, store) = open(10_500);
    let chunks: Vec<_> = (0..10).map(|s| chunk(s, 996)).collect();
    for (id, data) in &chunks {
        store.put(id, data).unwrap();
    }
    assert!(chunks.iter().all(|(id, _)| store.chunk_path(id).exists()));
    // Use the oldest two: get() and has() both count as use.
    assert!(store.get(&chunks[0].0).is_some());
    assert!(store.has(&chunks[1].0));
    // One more: 11 000 bytes > cap, so the scan evicts down to 7/8 (9 187): two go,
    // the least recently used, which are now chunks 2 and 3.
    let (id, data) = chunk(100, 996);
    store.put(&id, &data).unwrap();
    let present: Vec<bool> = chunks
        .iter()
        .map(|(id, _)| store.chunk_path(id).exists())
        .collect();
    assert_eq!(
        present,
        [true, true, false, false, true, true, true, true, true, true]
    );
    assert!(store.has(&id));
}

#[test]
fn two_writers_putting_the_same_ids_at_once() {
    // Two `Store`s on one directory stand for two `hoardcc serve` processes (each has its
    // own accounting); each thread writes the same chunks and entries, racing.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("hoardcc");
    let chunks: Arc<Vec<_>> = Arc::new((0..200).map(|s| chunk(s, 2000 + s as usize)).collect());
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::new(Store::open(&dir, DEFAULT_CAP).unwrap());
            let chunks = Arc::clone(&chunks);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..chunks.len() {
                    // Half the threads go backwards, so they meet in the middle.
                    let (id, data) = &chunks[if t % 2 == 0 { i } else { chunks.len() - 1 - i }];
                    store.put(id, data).unwrap();
                    store.put_keyed(&id.0, data).unwrap();
                    assert_eq!(store.get(id).as_deref(), Some(&data[..]));
                    assert_eq!(store.get_keyed(&id.0).as_deref(), Some(&data[..]));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let store = Store::open(&dir, DEFAULT_CAP).unwrap();
    for (id, data) in chunks.iter() {
        assert_eq!(store.get(id).as_deref(), Some(&data[..]));
        assert_eq!(store.get_keyed(&id.0).as_deref(), Some(&data[..]));
    }
    let expected: u64 = chunks
        .iter()
        .map(|(_, d)| 2 * d.len() as u64 + ENTRY_HEADER as u64)
        .sum();
    assert_eq!(
        on_disk(&store),
        expected,
        "no temporary files left, no duplicates"
    );
    assert_eq!(store.scan().unwrap(), expected);
}

#[test]
fn the_scan_total_survives_a_reopen_and_stale_temporaries_go() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("hoardcc");
    let store = Store::open(&dir, DEFAULT_CAP).unwrap();
    let (id, data) = chunk(5, 1000);
    store.put(&id, &data).unwrap();
    // A temporary file left by a killed writer, an hour and more ago.
    let fan = store.chunk_path(&id).parent().unwrap().to_path_buf();
    let stale = fan.join(".tmpdead");
    fs::write(&stale, [0u8; 500]).unwrap();
    let old = SystemTime::now() - Duration::from_secs(7200);
    File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let fresh = fan.join(".tmpbusy");
    fs::write(&fresh, [0u8; 300]).unwrap();
    assert_eq!(
        store.scan().unwrap(),
        1304,
        "the chunk (1000 + 4) and the busy temporary"
    );
    assert!(!stale.exists());
    assert!(fresh.exists(), "a writer may still be busy with it");
    drop(store);
    let again = Store::open(&dir, DEFAULT_CAP).unwrap();
    assert_eq!(again.estimated_size(), 1304);
}

#[test]
fn an_unsafe_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let open_dir = root.path().join("open");
    fs::create_dir(&open_dir).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        Store::open(&open_dir, DEFAULT_CAP),
        Err(StoreError::Open(_))
    ));

    let target = root.path().join("target");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).unwrap();
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = Store::open(&link, DEFAULT_CAP).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");

    let file = root.path().join("file");
    fs::write(&file, b"").unwrap();
    assert!(Store::open(&file, DEFAULT_CAP).is_err());

    if nix::unistd::geteuid().is_root() {
        // Another user's directory (root can make one).
        let theirs = root.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        fs::set_permissions(&theirs, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let err = Store::open(&theirs, DEFAULT_CAP).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }
}

/// The child half of [`two_processes_putting_the_same_ids_at_once`]: run only when that
/// test starts this binary with `HOARDCC_STORE_CHILD` naming the store.
#[test]
#[ignore = "started by two_processes_putting_the_same_ids_at_once"]
fn child_writer() {
    let Some(dir) = std::env::var_os("HOARDCC_STORE_CHILD") else {
        return;
    };
    let backwards = std::env::var_os("HOARDCC_STORE_BACKWARDS").is_some();
    let store = Store::open(Path::new(&dir), DEFAULT_CAP).unwrap();
    let mut seeds: Vec<u32> = (0..300).collect();
    if backwards {
        seeds.reverse();
    }
    for s in seeds {
        let (id, data) = chunk(s, 1500 + s as usize);
        store.put(&id, &data).unwrap();
        assert_eq!(store.get(&id).as_deref(), Some(&data[..]));
    }
}

#[test]
fn two_processes_putting_the_same_ids_at_once() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("hoardcc");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = [false, true]
        .into_iter()
        .map(|backwards| {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args([
                "--exact",
                "subsystem::store::tests::child_writer",
                "--ignored",
                "--test-threads=1",
            ])
            .env("HOARDCC_STORE_CHILD", &dir)
            .stdout(std::process::Stdio::null());
            if backwards {
                cmd.env("HOARDCC_STORE_BACKWARDS", "1");
            }
            cmd.spawn().unwrap()
        })
        .collect();
    for mut child in children {
        // Bounded: each child writes 300 small files.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "child writer hung");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "a child writer failed: {status}");
    }
    let store = Store::open(&dir, DEFAULT_CAP).unwrap();
    let mut expected = 0;
    for s in 0..300 {
        let (id, data) = chunk(s, 1500 + s as usize);
        assert_eq!(store.get(&id).as_deref(), Some(&data[..]), "chunk {s}");
        expected += data.len() as u64;
    }
    assert_eq!(on_disk(&store), expected, "no temporaries, no duplicates");
}
