//! Tests of the slot directory: the limit itself, and that nothing another local user
//! can put in a slot directory (a FIFO, a symlink, a held lock, a squatted or widened
//! directory) hangs a server or lets it run more compiles than the limit.

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// Everything here must answer at once; a hang shows as a failed bound, not a stuck test.
const QUICK: Duration = Duration::from_secs(5);

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, Mode::from_bits_truncate(0o666)).unwrap();
}

/// A shared (sticky, world-writable) directory like `/run/hoardcc`.
fn shared_dir(t: &tempfile::TempDir) -> PathBuf {
    let dir = t.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o1777);
    dir
}

#[test]
fn takes_lowest_free_slot_and_reports_busy_when_full() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("slots");
    let a = try_acquire(&dir, 2).unwrap().expect("slot 0 free");
    assert_eq!(a.index, 0);
    let b = try_acquire(&dir, 2).unwrap().expect("slot 1 free");
    assert_eq!(b.index, 1);
    assert!(try_acquire(&dir, 2).unwrap().is_none(), "all held → None");
    assert_eq!(current_load(&dir, 2), 2);
    drop(a);
    assert_eq!(current_load(&dir, 2), 1);
    let c = try_acquire(&dir, 2).unwrap().expect("slot 0 freed");
    assert_eq!(c.index, 0);
    drop((b, c));
    assert_eq!(current_load(&dir, 2), 0);
}

#[test]
fn a_new_directory_is_private() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("a/b/slots");
    let slot = try_acquire(&dir, 1).unwrap().unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    assert_eq!(open_dir(&dir).unwrap().1, Scope::Private);
    let file_mode = std::fs::metadata(dir.join("slot-0"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(file_mode & 0o777, 0o600);
    drop(slot);
    // A sticky world-writable one is shared, and its slot files readable by all.
    let shared = shared_dir(&t);
    assert_eq!(open_dir(&shared).unwrap().1, Scope::Shared);
    let _s = try_acquire(&shared, 1).unwrap().unwrap();
    let file_mode = std::fs::metadata(shared.join("slot-0"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(file_mode & 0o777, 0o644);
}

#[test]
fn unusable_directories_are_errors_not_hangs() {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    assert!(try_acquire(&file, 1).is_err());
    assert_eq!(current_load(&t.path().join("missing"), 4), 0);
    assert!(
        !t.path().join("missing").exists(),
        "the load probe creates nothing"
    );
    // World-writable without the sticky bit: others could swap our slot files.
    let wide = t.path().join("wide");
    std::fs::create_dir(&wide).unwrap();
    chmod(&wide, 0o777);
    assert!(matches!(
        try_acquire(&wide, 1),
        Err(ServerSlotError::Unsafe { .. })
    ));
    // A symlink to a good directory is not followed.
    let good = t.path().join("good");
    std::fs::create_dir(&good).unwrap();
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    assert!(matches!(
        try_acquire(&link, 1),
        Err(ServerSlotError::Dir { .. })
    ));
    assert!(std::fs::read_dir(&good).unwrap().next().is_none());
}

#[test]
fn another_users_directory_is_refused() {
    if !Uid::current().is_root() {
        eprintln!("skipped: needs root to make a directory of another user");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("theirs");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    nix::unistd::chown(&dir, Some(Uid::from_raw(65534)), None).unwrap();
    // Root owns everything it may use, so pretend from the child's side: check the rule.
    let st = std::fs::metadata(&dir).unwrap();
    assert_eq!(st.uid(), 65534);
    // As root we are uid 0; the directory belongs to 65534 → unsafe.
    assert!(matches!(
        try_acquire(&dir, 1),
        Err(ServerSlotError::Unsafe { .. })
    ));
}

#[test]
fn a_fifo_in_a_shared_directory_counts_as_held_and_never_blocks() {
    let t = tempfile::tempdir().unwrap();
    let dir = shared_dir(&t);
    mkfifo(&dir.join("slot-0"));
    let start = Instant::now();
    let s = try_acquire(&dir, 2).unwrap().expect("slot 1 is free");
    assert_eq!(s.index, 1, "the FIFO is skipped, not locked");
    assert!(
        try_acquire(&dir, 2).unwrap().is_none(),
        "FIFO counts as held"
    );
    assert_eq!(current_load(&dir, 2), 2);
    assert!(start.elapsed() < QUICK);
    let ft = std::fs::symlink_metadata(dir.join("slot-0"))
        .unwrap()
        .file_type();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&ft),
        "a shared dir is not repaired"
    );
}

#[test]
fn a_fifo_or_symlink_in_a_private_directory_is_replaced() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("mine");
    open_dir(&dir).unwrap();
    mkfifo(&dir.join("slot-0"));
    let target = t.path().join("target");
    std::fs::write(&target, b"keep").unwrap();
    std::os::unix::fs::symlink(&target, dir.join("slot-1")).unwrap();
    let start = Instant::now();
    let a = try_acquire(&dir, 2).unwrap().expect("slot 0 replaced");
    let b = try_acquire(&dir, 2).unwrap().expect("slot 1 replaced");
    assert_eq!((a.index, b.index), (0, 1));
    assert!(start.elapsed() < QUICK);
    for n in ["slot-0", "slot-1"] {
        assert!(
            std::fs::symlink_metadata(dir.join(n)).unwrap().is_file(),
            "{n}"
        );
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}

#[test]
fn a_symlinked_slot_in_a_shared_directory_is_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let dir = shared_dir(&t);
    let target = t.path().join("victim");
    std::os::unix::fs::symlink(&target, dir.join("slot-0")).unwrap();
    assert!(try_acquire(&dir, 1).unwrap().is_none(), "counts as held");
    assert_eq!(current_load(&dir, 1), 1);
    assert!(!target.exists(), "the link target is never created");
}

#[test]
fn a_lock_held_by_another_process_is_busy_at_once() {
    let t = tempfile::tempdir().unwrap();
    let dir = shared_dir(&t);
    std::fs::write(dir.join("slot-0"), b"").unwrap();
    // flock(1) holds the lock until its stdin closes.
    let mut holder = std::process::Command::new("flock")
        .arg(dir.join("slot-0"))
        .args(["-c", "echo locked; read x"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock(1)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "locked\n");
    let start = Instant::now();
    assert!(try_acquire(&dir, 1).unwrap().is_none());
    assert_eq!(current_load(&dir, 1), 1);
    assert!(start.elapsed() < QUICK);
    drop(holder.stdin.take());
    holder.wait().unwrap();
    assert!(
        try_acquire(&dir, 1).unwrap().is_some(),
        "free once the holder exits"
    );
}

#[test]
fn default_directory_order() {
    let t = tempfile::tempdir().unwrap();
    let me = Uid::current();
    let none = |_: &str| None;
    let missing = t.path().join("no-run-hoardcc");
    let tmp = t.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // Nothing provisioned, no runtime dir (a uid with no /run/user entry): /tmp/…-<uid>.
    let ghost = Uid::from_raw(4_000_000_000);
    let ours = tmp.join(format!("hoardcc-slots-{ghost}"));
    let home = |k: &str| (k == "HOME").then(|| t.path().join("home").into_os_string());
    assert_eq!(choose_slot_dir(ghost, &none, &missing, &tmp, "h"), ours);
    // A runtime dir of ours (0700) wins over /tmp.
    let run = t.path().join("run-user");
    std::fs::create_dir(&run).unwrap();
    chmod(&run, 0o700);
    let xdg = |k: &str| (k == "XDG_RUNTIME_DIR").then(|| run.clone().into_os_string());
    assert_eq!(
        choose_slot_dir(me, &xdg, &missing, &tmp, "h"),
        run.join("hoardcc-slots")
    );
    // A runtime dir others can enter is ignored.
    chmod(&run, 0o755);
    let fallback = tmp.join(format!("hoardcc-slots-{me}"));
    if !Path::new(&format!("/run/user/{me}")).exists() {
        assert_eq!(choose_slot_dir(me, &xdg, &missing, &tmp, "h"), fallback);
    }
    // A squatted /tmp name (a symlink here) sends us under $HOME, named by host.
    std::os::unix::fs::symlink(&run, &ours).unwrap();
    assert_eq!(
        choose_slot_dir(ghost, &home, &missing, &tmp, "build1"),
        t.path().join("home/.cache/hoardcc/slots-build1")
    );
    // An admin's root-owned sticky directory is shared by everyone.
    if me.is_root() {
        let shared = shared_dir(&t);
        assert_eq!(choose_slot_dir(me, &xdg, &shared, &tmp, "h"), shared);
        chmod(&shared, 0o777);
        assert_ne!(
            choose_slot_dir(me, &xdg, &shared, &tmp, "h"),
            shared,
            "not sticky"
        );
    }
}

#[test]
fn host_limit_defaults_to_cpus() {
    assert_eq!(host_limit(Some(3)), 3);
    assert!(host_limit(None) >= 1);
    assert_eq!(host_limit(Some(0)), host_limit(None));
}
