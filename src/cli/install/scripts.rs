//! The remote side of `install-server`: the one-line `sh` scripts it runs on the server
//! and the parsing of what they print. Pure (no I/O): `cli::install` runs them over
//! `mux::ssh::Connection::exec_capture`.
//!
//! Every script is a single line with no single quote, backslash or `!`, and every
//! argument is checked to hold none of those or a newline, so `sh -c '<script>' hoardcc
//! ARGS…` passes through any login shell sshd may use (sh, bash, zsh, fish, csh) intact.

/// Exit status of [`UPLOAD`] when the copied binary does not run there.
pub const EXIT_DOES_NOT_RUN: u32 = 14;
/// Exit status of [`AUTHORIZE`] when the key is already listed with other options.
pub const EXIT_KEY_CONFLICT: u32 = 20;

/// Reports `home=`, `os=`, `arch=`, `hasher=` and, when `~/.local/bin/hoardcc` exists,
/// `exists=yes`, `hash=` (SHA-256, when a hasher is there) and `version=`.
pub const PROBE: &str = concat!(
    r#"f="$HOME/.local/bin/hoardcc"; echo "home=$HOME"; echo "os=$(uname -s)"; echo "arch=$(uname -m)"; "#,
    r#"if command -v sha256sum >/dev/null 2>&1; then h="sha256sum"; "#,
    r#"elif command -v shasum >/dev/null 2>&1; then h="shasum -a 256"; else h=""; fi; "#,
    r#"echo "hasher=$h"; "#,
    r#"if [ -e "$f" ]; then echo "exists=yes"; "#,
    r#"if [ -n "$h" ]; then echo "hash=$($h < "$f" | cut -d " " -f 1)"; fi; "#,
    r#"echo "version=$("$f" --version 2>/dev/null | head -n 1)"; fi"#,
);

/// Stdin → `~/.local/bin/.hoardcc.tmp.$1` (created exclusively), checked for size `$4`
/// and SHA-256 `$2` (with hasher `$3`, when one was found), made executable, run once with
/// `--version` (exit [`EXIT_DOES_NOT_RUN`] with its stderr when it cannot run), then renamed
/// over `~/.local/bin/hoardcc`. The temp file is removed on every failure.
pub const UPLOAD: &str = concat!(
    r#"umask 022; d="$HOME/.local/bin"; mkdir -p "$d" || exit 10; t="$d/.hoardcc.tmp.$1"; "#,
    r#"fail() { rm -f "$t"; echo "$1" >&2; exit "$2"; }; "#,
    r#"set -C; cat > "$t" || fail "cannot write $t" 11; set +C; "#,
    r#"n=$(wc -c < "$t"); [ $n -eq $4 ] || fail "short copy: $n of $4 bytes arrived" 12; "#,
    r#"if [ -n "$3" ]; then got=$($3 < "$t" | cut -d " " -f 1); "#,
    r#"[ "$got" = "$2" ] || fail "the copy arrived damaged: sha256 $got, expected $2" 12; fi; "#,
    r#"chmod 755 "$t" || fail "cannot chmod $t" 13; "#,
    r#"v=$("$t" --version 2>&1) || fail "$v" 14; "#,
    r#"mv -f "$t" "$d/hoardcc" || fail "cannot rename $t to $d/hoardcc" 15; echo "version=$v""#,
);

/// The installed binary's `--version`.
pub const VERSION: &str = r#""$HOME/.local/bin/hoardcc" --version"#;

/// The installed binary's own report of the compilers it offers.
pub const CHECK: &str = r#""$HOME/.local/bin/hoardcc" serve --check"#;

/// Add line `$1` (for key blob `$2`) to `~/.ssh/authorized_keys` unless it is there:
/// prints `authorized=present` or `authorized=added`; exits [`EXIT_KEY_CONFLICT`] (the
/// existing lines on stderr) when the key is listed with other options. The file is
/// rewritten through a temp file `$3` and a rename, keeping its other lines.
pub const AUTHORIZE: &str = concat!(
    r#"umask 077; s="$HOME/.ssh"; a="$s/authorized_keys"; mkdir -p "$s" || exit 10; "#,
    r#"if [ -f "$a" ] && grep -q -x -F -e "$1" "$a"; then echo authorized=present; exit 0; fi; "#,
    r#"if [ -f "$a" ] && grep -q -F -e "$2" "$a"; then grep -F -e "$2" "$a" >&2; exit 20; fi; "#,
    r#"t="$a.hoardcc.tmp.$3"; fail() { rm -f "$t"; echo "$1" >&2; exit "$2"; }; "#,
    r#"set -C; { if [ -s "$a" ]; then cat "$a"; [ -z "$(tail -c 1 "$a")" ] || echo; fi; echo "$1"; } > "$t" "#,
    r#"|| fail "cannot write $t" 11; set +C; "#,
    r#"mv -f "$t" "$a" || fail "cannot rename $t to $a" 12; echo authorized=added"#,
);

/// Characters that no script or argument may hold (see the module doc).
fn is_unsafe(c: char) -> bool {
    matches!(c, '\'' | '\\' | '\n' | '\r' | '!' | '\0')
}

/// True when `text` can travel inside single quotes through any of the login shells.
pub fn is_safe(text: &str) -> bool {
    !text.chars().any(is_unsafe)
}

/// The exec command line: `sh -c '<script>' hoardcc-install '<arg>'…`.
///
/// # Panics
/// When `script` or an argument holds a character `is_safe` refuses: the scripts are
/// constants and every argument is checked where it is made, so that is a bug.
pub fn remote_command(script: &str, args: &[&str]) -> String {
    assert!(is_safe(script), "unsafe remote script");
    let mut cmd = format!("sh -c '{script}' hoardcc-install");
    for a in args {
        assert!(is_safe(a), "unsafe remote argument {a:?}");
        cmd.push_str(" '");
        cmd.push_str(a);
        cmd.push('\'');
    }
    cmd
}

/// What `PROBE` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// `$HOME` there.
    pub home: String,
    /// `uname -s`.
    pub os: String,
    /// `uname -m`.
    pub arch: String,
    /// `sha256sum`, `shasum -a 256`, or empty when neither exists there.
    pub hasher: String,
    /// `~/.local/bin/hoardcc` exists.
    pub exists: bool,
    /// Its SHA-256, when it exists and a hasher was found.
    pub hash: Option<String>,
    /// The first line of its `--version`, when it printed one.
    pub version: Option<String>,
}

impl Probe {
    /// Parse `PROBE`'s output; unknown lines are ignored, and a hasher other than the
    /// two the script names is dropped (it travels back as an argument).
    pub fn parse(text: &str) -> Probe {
        let mut p = Probe::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim();
            match k {
                "home" => p.home = v.to_string(),
                "os" => p.os = v.to_string(),
                "arch" => p.arch = v.to_string(),
                "hasher" if matches!(v, "sha256sum" | "shasum -a 256") => p.hasher = v.to_string(),
                "exists" => p.exists = v == "yes",
                "hash" if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    p.hash = Some(v.to_ascii_lowercase())
                }
                "version" if !v.is_empty() => p.version = Some(v.to_string()),
                _ => {}
            }
        }
        p
    }

    /// The hash of what is installed, when something is: `unknown` when it cannot be
    /// computed there (then it counts as different).
    pub fn existing_hash(&self) -> Option<&str> {
        self.exists.then(|| {
            self.hash
                .as_deref()
                .unwrap_or("unknown: no sha256sum there")
        })
    }
}

/// Whether a binary built for Rust's `local` architecture runs on a server whose `uname
/// -m` says `remote`. Unknown names pass (the run check then has the last word).
pub fn arch_compatible(local: &str, remote: &str) -> bool {
    let remote = match remote {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "i386" | "i486" | "i586" | "i686" => "x86",
        "ppc64le" | "ppc64" => "powerpc64",
        r if r.starts_with("armv") => "arm",
        r => r,
    };
    const KNOWN: &[&str] = &[
        "x86_64",
        "x86",
        "aarch64",
        "arm",
        "riscv64",
        "powerpc64",
        "s390x",
        "loongarch64",
    ];
    remote.is_empty()
        || remote == local
        || (local == "x86" && remote == "x86_64")
        || (local == "arm" && remote == "aarch64")
        || !KNOWN.contains(&remote)
}

/// The `authorized_keys` line for `public` (`ALGO BASE64 [COMMENT]`): `restrict` and a
/// forced `<home>/.local/bin/hoardcc serve`.
///
/// # Errors
/// A message when `home` is not an absolute path that can stand in a forced command (no
/// quotes, backslashes, spaces or control characters), or the key line is malformed.
pub fn authorized_line(home: &str, public: &str) -> Result<String, String> {
    let home_ok = home.starts_with('/')
        && is_safe(home)
        && !home
            .chars()
            .any(|c| c == '"' || c.is_whitespace() || c.is_control());
    if !home_ok {
        return Err(format!(
            "the server's home {home:?} cannot stand in a forced command"
        ));
    }
    let mut parts = public.split_whitespace();
    let (Some(algo), Some(blob)) = (parts.next(), parts.next()) else {
        return Err("not an OpenSSH public key line".into());
    };
    let b64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    let algo_ok = algo
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'@' | b'.'));
    if !algo_ok || !b64(blob) {
        return Err("not an OpenSSH public key line".into());
    }
    let home = home.trim_end_matches('/');
    Ok(format!(
        "restrict,command=\"{home}/.local/bin/hoardcc serve\" {algo} {blob} hoardcc-compile-only"
    ))
}
