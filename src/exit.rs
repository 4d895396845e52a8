//! Exit codes, shared by every stage: the numbers distcc uses (its `exitcode.h`), so
//! scripts and build systems that know distcc read hoardcc's failures the same way.
//! The wrapper maps a distribution failure to one of these when fallback is off.

/// distcc-compatible exit codes (100–120).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Generic distribution failure.
    DistccFailed = 100,
    /// Bad arguments to hoardcc itself.
    BadArguments = 101,
    /// Could not bind or listen.
    BindFailed = 102,
    /// Could not connect to the server.
    ConnectFailed = 103,
    /// The compiler was killed by a signal.
    CompilerCrashed = 104,
    /// Out of memory.
    OutOfMemory = 105,
    /// Bad host specification.
    BadHostspec = 106,
    /// I/O error on the network.
    IoError = 107,
    /// Truncated data.
    Truncated = 108,
    /// Protocol error: garbage, version mismatch, derailment.
    ProtocolError = 109,
    /// The compiler was not found (locally or on the server).
    CompilerMissing = 110,
    /// Recursion detected: hoardcc would call itself.
    RecursionError = 111,
    /// Setuid or similar refused.
    SetuidError = 112,
    /// The server refused the job (allow-list, refused arguments).
    AccessDenied = 113,
    /// The server is busy.
    Busy = 114,
    /// No such file.
    NoSuchFile = 115,
    /// No hosts were defined.
    NoHosts = 116,
    /// Gone: the host went away.
    Gone = 117,
    /// A timeout passed.
    Timeout = 118,
    /// ssh failed (connection, authentication or host key).
    SshFailed = 119,
    /// Local preprocessing failed outside the compiler's own diagnostics.
    LocalCppFailed = 120,
}

impl ExitCode {
    /// The numeric process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn codes_match_distcc_exitcode_h() {
        assert_eq!(ExitCode::DistccFailed.code(), 100);
        assert_eq!(ExitCode::ConnectFailed.code(), 103);
        assert_eq!(ExitCode::IoError.code(), 107);
        assert_eq!(ExitCode::ProtocolError.code(), 109);
        assert_eq!(ExitCode::CompilerMissing.code(), 110);
        assert_eq!(ExitCode::AccessDenied.code(), 113);
        assert_eq!(ExitCode::Busy.code(), 114);
        assert_eq!(ExitCode::NoHosts.code(), 116);
        assert_eq!(ExitCode::Timeout.code(), 118);
        assert_eq!(ExitCode::LocalCppFailed.code(), 120);
    }
}
