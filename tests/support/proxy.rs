//! A userspace TCP proxy for fault injection and WAN-like links: sits between a client
//! and a server (the mux and the private sshd of `super::sshd`, or the WAN benchmark's
//! hosts) and can cut every open connection, freeze them (a silent partition: nothing is
//! closed, no byte moves), thaw them, add one-way latency, cap the bandwidth (per
//! connection, or one link shared by all of them), charge a round trip per new
//! connection (a TCP handshake), and it counts the bytes it delivered each way.
//! Blocking std code, one accept thread plus a reader and a writer thread per direction
//! of each connection.
//!
//! Neighbours: tests/faults.rs and tests/blip.rs drive it; `super::proxy_alias` writes the
//! `~/.ssh/config` alias that makes a host list entry `@hoardtest-proxy` go through it;
//! examples/wanproxy.rs (the WAN benchmark's link, `bench/wan.sh`) includes this file with
//! `#[path]`, so it depends on nothing else of the test support.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// The one link all connections share, per direction (bytes per second).
    link_bytes_per_sec: Option<u64>,
    /// Charged once per new connection before anything is forwarded.
    connect_delay: Duration,
}

/// The two directions, as indexes of [`Shared::delivered`] and [`Shared::link_free`].
const UP: usize = 0;
/// See [`UP`].
const DOWN: usize = 1;

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
    /// Bytes written to the server ([`UP`]) and to the client ([`DOWN`]).
    delivered: [AtomicU64; 2],
    /// When the shared link is free again, per direction.
    link_free: [Mutex<Option<Instant>>; 2],
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

    /// When `n` bytes sent in direction `dir` have crossed the shared link (now, when
    /// the link is uncapped), reserving the link for them.
    fn link_reserve(&self, dir: usize, n: usize) -> Instant {
        let now = Instant::now();
        let Some(bps) = self.knobs().link_bytes_per_sec else {
            return now;
        };
        let mut free = self.link_free[dir]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let start = free.map_or(now, |f| f.max(now));
        let done = start + Duration::from_secs_f64(n as f64 / bps as f64);
        *free = Some(done);
        done
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
            delivered: [AtomicU64::new(0), AtomicU64::new(0)],
            link_free: [Mutex::new(None), Mutex::new(None)],
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

    /// Bytes delivered to the server side so far (client → server), all connections
    /// (counted as each chunk is handed to the socket).
    pub fn bytes_up(&self) -> u64 {
        self.shared.delivered[UP].load(Ordering::SeqCst)
    }

    /// Bytes delivered to the client side so far (server → client), all connections.
    pub fn bytes_down(&self) -> u64 {
        self.shared.delivered[DOWN].load(Ordering::SeqCst)
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

    /// Caps each direction of the link that all connections share at `bytes_per_sec`
    /// (`None`: no cap): a chunk waits until the chunks before it, on any connection,
    /// have crossed.
    pub fn set_link_bandwidth(&self, bytes_per_sec: Option<u64>) {
        self.shared.knobs().link_bytes_per_sec = bytes_per_sec.filter(|b| *b > 0);
        self.shared.changed.notify_all();
    }

    /// Holds each new connection for `delay` before anything is forwarded (the client's
    /// connect has returned; its first bytes wait), as a TCP handshake costs a round trip.
    pub fn set_connect_delay(&self, delay: Duration) {
        self.shared.knobs().connect_delay = delay;
        self.shared.changed.notify_all();
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
    let charge = shared.knobs().connect_delay;
    if !charge.is_zero() {
        let until = Instant::now() + charge;
        let mut k = shared.knobs();
        while !shared.stop.load(Ordering::SeqCst) && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            k = shared
                .changed
                .wait_timeout(k, left.min(RECHECK))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(k);
        if shared.stop.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    }
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
    direction(&shared, &conn, client, s3, UP);
    direction(&shared, &conn, server, c3, DOWN);
}

/// What a reader hands its writer: a chunk stamped with the time it may leave, or the end.
enum Piece {
    Data(Instant, Vec<u8>),
    End(Instant),
}

/// Starts forwarding `from` → `to` (direction `dir`): the reader stamps each chunk with
/// its release time (arrival + delay), the writer releases chunks in order, honouring
/// freeze and both bandwidth caps, and counts what it delivered.
fn direction(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    mut from: TcpStream,
    mut to: TcpStream,
    dir: usize,
) {
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
            let crossed = s.link_reserve(dir, data.len());
            if !s.sleep_until(&c, crossed) {
                return;
            }
            // Counted before the write, so a peer that has read the bytes finds them counted.
            s.delivered[dir].fetch_add(data.len() as u64, Ordering::SeqCst);
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
