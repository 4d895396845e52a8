//! A compiler's identity, pure data: what the client's compiler is, so the server can
//! compile with one that is the same (issue 11). Carried in `proto::msg::Job`; worked out
//! by running the compiler elsewhere. Neighbours: `proto::msg`.

use serde::{Deserialize, Serialize};

/// Who a compiler is, as far as its output depends on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompilerId {
    /// `-dumpfullversion` (gcc) or the version clang's `-v` prints, e.g. "12.2.0".
    pub version: String,
    /// `-dumpmachine`, e.g. "x86_64-linux-gnu".
    pub target: String,
    /// The configuration line of `-v` ("Configured with: …" for gcc).
    pub configured: String,
    /// With `strict`: a hash of the driver, `cc1`/`cc1plus` and `as`, in hex.
    pub binaries: Option<String>,
}
