//! Test support shared by the unit tests of several stages (compiled for tests only).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

/// A loopback TCP port that refuses connections for as long as this lives: a socket bound
/// to it that never listens. Unlike a listener bound and dropped, whose port another test
/// running meanwhile may be given, nothing else can take the port while it is held.
pub(crate) struct RefusedPort {
    _socket: OwnedFd,
    port: u16,
}

impl RefusedPort {
    /// Binds a fresh socket to `127.0.0.1:0`.
    ///
    /// # Panics
    /// Panics if the socket cannot be made or bound.
    pub(crate) fn new() -> RefusedPort {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).expect("bind 127.0.0.1:0");
        let port = getsockname::<SockaddrIn>(fd.as_raw_fd())
            .expect("getsockname")
            .port();
        RefusedPort { _socket: fd, port }
    }

    /// The port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_port_refuses() {
        let p = RefusedPort::new();
        let err = std::net::TcpStream::connect(("127.0.0.1", p.port())).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
