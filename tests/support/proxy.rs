//! A userspace TCP proxy for fault injection: sits between the mux and the private sshd
//! ([`super::sshd`]) and can cut every open connection, freeze them (a silent partition:
//! nothing is closed, no byte moves), thaw them, and add one-way latency and a bandwidth
//! cap for WAN-like runs. Blocking std code, one accept thread plus a reader and a writer
//! thread per direction of each connection.
//!
//! Neighbours: tests/faults.rs drives it; [`Proxy::alias_for`] writes the `~/.ssh/config`
//! alias and `known_hosts` line that make a host list entry `@hoardtest-proxy` go through it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sshd::Sshd;

/// The `Host` alias [`Proxy::alias_for`] adds to the client's `~/.ssh/config`.
pub const PROXY_ALIAS: &str = "hoardtest-proxy";

/// How long the proxy waits to reach its target for a new connection.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of one forwarded chunk.
const CHUNK: usize = 64 << 10;
/// Longest a blocked writer sleeps before it looks at the flags again (wakeups come from
/// the condition variable; this only bounds a missed one).
const RECHECK: Duration = Duration::from_millis(50);

/// Knobs shared by every connection, changed at any time.
#[derive(Debug, Default)]
struct Knobs {
    frozen: bool,
    delay: Duration,
    bytes_per_sec: Option<u64>,
}

/// One proxied connection: both sockets, so [`Proxy::cut`] can shut them down.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    cut: AtomicBool,
}

impl Conn {
    fn shut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

struct Shared {
    target: SocketAddr,
    knobs: Mutex<Knobs>,
    /// Notified when a knob changes, a connection is cut, or the proxy stops.
    changed: Condvar,
    stop: AtomicBool,
    accepted: AtomicUsize,
    conns: Mutex<Vec<Weak<Conn>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn knobs(&self) -> std::sync::MutexGuard<'_, Knobs> {
        self.knobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn(self: &Arc<Self>, f: impl FnOnce() + Send + 'static) {
        let h = std::thread::spawn(f);
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(h);
    }

    /// Blocks while the proxy is frozen. False when the connection was cut or the proxy
    /// stopped meanwhile (the caller drops what it holds).
    fn wait_thawed(&self, conn: &Conn) -> bool {
        let mut k = self.knobs();
        loop {
            if self.stop.load(Ordering::SeqCst) || conn.cut.load(Ordering::SeqCst) {
                return false;
            }
            if !k.frozen {
                return true;
            }
            k = self
                .changed
                .wait_timeout(k, RECHECK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Sleeps until `until` unless the connection is cut or the proxy stops first.
    fn sleep_until(&self, conn: &Conn, until: Instant) -> bool {
        let mut k = self.knobs();
        loop {
            if self.stop.load(Ordering::SeqCst) || conn.cut.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            k = self
                .changed
                .wait_timeout(k, (until - now).min(RECHECK))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A running proxy from `127.0.0.1:<port>` to a target. Drop stops it: every connection is
/// closed and every thread joined.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a random loopback port and forwards each accepted connection to `target`.
    ///
    /// # Panics
    /// Panics if the listener cannot be bound.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind 127.0.0.1:0");
        let port = listener.local_addr().expect("proxy: local_addr").port();
        let shared = Arc::new(Shared {
            target,
            knobs: Mutex::new(Knobs::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, s));
        Proxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// The loopback port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far (cut or not).
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open (both directions not yet finished).
    pub fn connections_open(&self) -> usize {
        let mut conns = self.shared.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|w| w.strong_count() > 0);
        conns
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| !c.cut.load(Ordering::SeqCst))
            .count()
    }

    /// Closes (shuts down both sides of) every connection open now; both peers see the
    /// connection end. New connections are still accepted and forwarded.
    pub fn cut(&self) {
        let conns: Vec<Arc<Conn>> = {
            let mut conns = self.shared.conns.lock().unwrap_or_else(|p| p.into_inner());
            let live = conns.iter().filter_map(Weak::upgrade).collect();
            conns.clear();
            live
        };
        for c in &conns {
            c.shut();
        }
        self.shared.changed.notify_all();
    }

    /// Stops forwarding in both directions, on open and new connections, without closing
    /// anything: bytes (and FINs) are held back until [`Proxy::thaw`], like a laptop asleep
    /// or a silent partition with TCP retransmitting.
    pub fn freeze(&self) {
        self.shared.knobs().frozen = true;
        self.shared.changed.notify_all();
    }

    /// Resumes forwarding; what was held back is delivered in order.
    pub fn thaw(&self) {
        self.shared.knobs().frozen = false;
        self.shared.changed.notify_all();
    }

    /// One-way latency added to every forwarded chunk (in both directions, so a round trip
    /// gains twice this). Chunks keep their order; throughput is not limited by it.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.knobs().delay = delay;
        self.shared.changed.notify_all();
    }

    /// Caps each direction of each connection at `bytes_per_sec` (`None`: no cap).
    pub fn set_bandwidth(&self, bytes_per_sec: Option<u64>) {
        self.shared.knobs().bytes_per_sec = bytes_per_sec.filter(|b| *b > 0);
        self.shared.changed.notify_all();
    }

    /// Adds a `Host hoardtest-proxy` block to `sshd`'s client `~/.ssh/config` (same user,
    /// key and known_hosts as the `hoardtest` alias, port = this proxy) and trusts sshd's
    /// host key under `[127.0.0.1]:<proxy port>` in the client's `known_hosts` (the mux has
    /// no HostKeyAlias). Returns the alias, for a host list like `@hoardtest-proxy/4`.
    ///
    /// # Panics
    /// Panics if the files cannot be written.
    pub fn alias_for(&self, sshd: &Sshd) -> String {
        let c = format!("\n{}", sshd.client_host_block(PROXY_ALIAS, self.port));
        append(&sshd.ssh_config_path(), &c);
        let line = format!("[127.0.0.1]:{} {}\n", self.port, sshd.host_public_key());
        append(&sshd.known_hosts_path(), &line);
        PROXY_ALIAS.to_string()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the blocking accept() with a connection of our own; it sees `stop` and ends.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        // Connections accepted while stopping may have registered after the cut above.
        self.cut();
        // Joining a connection's first thread may let it register more; drain until none.
        loop {
            let threads: Vec<JoinHandle<()>> = self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .collect();
            if threads.is_empty() {
                break;
            }
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let s = shared.clone();
        shared.spawn(move || connect_and_pump(client, s));
    }
}

/// Dials the target for one accepted client and forwards both ways until both directions
/// have ended.
fn connect_and_pump(client: TcpStream, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect_timeout(&shared.target, TARGET_CONNECT_TIMEOUT) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let conn = Arc::new(Conn {
        client: c2,
        server: s2,
        cut: AtomicBool::new(false),
    });
    {
        let mut conns = shared.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|w| w.strong_count() > 0);
        conns.push(Arc::downgrade(&conn));
    }
    if shared.stop.load(Ordering::SeqCst) {
        conn.shut();
        return;
    }
    let (Ok(c3), Ok(s3)) = (client.try_clone(), server.try_clone()) else {
        conn.shut();
        return;
    };
    // client → server and server → client, each a reader and a writer thread.
    direction(&shared, &conn, client, s3);
    direction(&shared, &conn, server, c3);
}

/// What a reader hands its writer: a chunk stamped with the time it may leave, or the end.
enum Piece {
    Data(Instant, Vec<u8>),
    End(Instant),
}

/// Starts forwarding `from` → `to`: the reader stamps each chunk with its release time
/// (arrival + delay), the writer releases chunks in order, honouring freeze and bandwidth.
fn direction(shared: &Arc<Shared>, conn: &Arc<Conn>, mut from: TcpStream, mut to: TcpStream) {
    let (tx, rx) = mpsc::channel::<Piece>();
    let (s, c) = (shared.clone(), conn.clone());
    shared.spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if s.stop.load(Ordering::SeqCst) || c.cut.load(Ordering::SeqCst) {
                return;
            }
            let release = Instant::now() + s.knobs().delay;
            let piece = if n == 0 {
                Piece::End(release)
            } else {
                Piece::Data(release, buf[..n].to_vec())
            };
            let end = matches!(piece, Piece::End(_));
            if tx.send(piece).is_err() || end {
                return;
            }
        }
    });
    let (s, c) = (shared.clone(), conn.clone());
    shared.spawn(move || {
        for piece in rx {
            let (release, data) = match piece {
                Piece::Data(t, d) => (t, Some(d)),
                Piece::End(t) => (t, None),
            };
            if !s.sleep_until(&c, release) || !s.wait_thawed(&c) {
                return;
            }
            let Some(data) = data else {
                // The sender finished: pass the FIN on, keep the other direction open.
                let _ = to.shutdown(Shutdown::Write);
                return;
            };
            if to.write_all(&data).is_err() {
                c.shut();
                s.changed.notify_all();
                return;
            }
            let cap = s.knobs().bytes_per_sec;
            if let Some(bps) = cap {
                let pause = Duration::from_secs_f64(data.len() as f64 / bps as f64);
                if !s.sleep_until(&c, Instant::now() + pause) {
                    return;
                }
            }
        }
    });
}
