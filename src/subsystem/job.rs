//! Stage: server admission of one native `Job`: the compiler allow-list (a bare name,
//! resolved on this host's PATH, never a path the client chose), re-validation of the
//! arguments and names with the same policy the wrapper used (`args::check_server_args`,
//! `args::check_name`), the job
//! directory with the client's cwd mirrored inside it (`subsystem::workdir`), and the
//! exact command line with its environment and containment (`subsystem::sandbox`).
//! Two halves, so that no work happens before admission: [`check`]
//! (cheap: names, counts and the sizes the job *claims*) runs before the server slot is taken,
//! [`stage`] (decode, write) after. Neighbours: `subsystem::session` (calls them for each `Job`
//! and answers `Refused` on [`PrepareError::Refused`]), `subsystem::exec` (runs the command),
//! `subsystem::distccd` (shares the allow-list).

use crate::paths::is_executable;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::config::Admission;
use crate::proto::msg::{Job, SourceKind};

use super::exec::CompileCommand;
use super::sandbox::{compiler_env, Sandbox};
use super::workdir::{WorkDir, WorkDirError};
use crate::args::is_compiler_name;

/// Why a compiler name was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompilerRefusal {
    /// Not in the allow-list (or not a bare name).
    #[error("compiler {0:?} is not allowed on this server")]
    NotAllowed(String),
    /// Allowed, but not found as an executable on the server's PATH.
    #[error("compiler {0:?} is not installed on this server")]
    NotFound(String),
}

/// Why a job cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The job itself is unacceptable: answered with `Refused{reason}`.
    #[error("{0}")]
    Refused(String),
    /// The server failed preparing it (disk full, bad blob): answered with `ServerError`.
    #[error("{0}")]
    Server(String),
}

impl From<WorkDirError> for PrepareError {
    fn from(e: WorkDirError) -> Self {
        match e {
            WorkDirError::Io(_) => PrepareError::Server(e.to_string()),
            _ => PrepareError::Refused(e.to_string()),
        }
    }
}

/// Which compilers this server runs, and where it looks for them.
#[derive(Debug, Clone)]
pub struct AllowList {
    /// Accept the default names and their variants ([`is_compiler_name`]).
    pub default_compilers: bool,
    /// Extra names from the configuration. A bare name is looked up on the PATH; an
    /// absolute path allows its basename and resolves to exactly that file.
    pub extra: Vec<String>,
    /// The search path (`$PATH` of the server process unless overridden).
    pub search_path: OsString,
}

impl AllowList {
    /// An allow-list over `search_path`, or the process's `$PATH` if `None`.
    pub fn new(default_compilers: bool, extra: Vec<String>, search_path: Option<OsString>) -> Self {
        let search_path = search_path
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        AllowList {
            default_compilers,
            extra,
            search_path,
        }
    }

    /// Resolves a job's compiler name to the executable to run.
    ///
    /// # Errors
    /// [`CompilerRefusal::NotAllowed`] for a path, an empty name or a name outside the
    /// list; [`CompilerRefusal::NotFound`] if no executable of that name is on the PATH.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, CompilerRefusal> {
        if name.is_empty() || name.contains('/') || name.contains('\0') || name.starts_with('.') {
            return Err(CompilerRefusal::NotAllowed(name.to_owned()));
        }
        for entry in &self.extra {
            if entry.contains('/') {
                let p = Path::new(entry);
                if p.is_absolute() && p.file_name() == Some(OsStr::new(name)) {
                    return if is_executable(p) {
                        Ok(p.to_path_buf())
                    } else {
                        Err(CompilerRefusal::NotFound(name.to_owned()))
                    };
                }
            }
        }
        let allowed = self.extra.iter().any(|e| e == name)
            || (self.default_compilers && is_compiler_name(name));
        if !allowed {
            return Err(CompilerRefusal::NotAllowed(name.to_owned()));
        }
        find_on_path(name, &self.search_path)
            .ok_or_else(|| CompilerRefusal::NotFound(name.to_owned()))
    }
}

/// The first executable file called `name` in the absolute directories of `search_path`.
pub fn find_on_path(name: &str, search_path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(search_path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// A job ready to run: its directory, the command, and where its outputs will appear.
#[derive(Debug)]
pub struct Prepared {
    /// The job directory (removed when this is dropped).
    pub workdir: WorkDir,
    /// The compiler command, run in the mirrored cwd.
    pub command: CompileCommand,
    /// The main output: (name as the job gave it, path in the job directory).
    pub output: (String, PathBuf),
    /// Extra outputs (returned when they exist).
    pub extra_outputs: Vec<(String, PathBuf)>,
    /// The job root as the compiler saw it in file names it reports, when line markers
    /// were pointed into the root (`root_markers`): removed from its stderr.
    pub root_in_names: Option<Vec<u8>>,
}

impl Prepared {
    /// The compiler's stderr as the client must see it: file names that were pointed into
    /// the job root (`ROOT/abs/inc/g.h`) get their client names back (`/abs/inc/g.h`).
    pub fn client_stderr(&self, stderr: &[u8]) -> Vec<u8> {
        match &self.root_in_names {
            Some(root) => strip_root(stderr, root),
            None => stderr.to_vec(),
        }
    }
}

/// Validates `job` and stages it: [`check`], then [`stage`].
///
/// # Errors
/// As [`check`] and [`stage`].
pub fn prepare(
    job: &Job,
    allow: &AllowList,
    tmpdir: Option<&Path>,
    limits: &Admission,
    sandbox: &Sandbox,
) -> Result<Prepared, PrepareError> {
    let program = check(job, allow, limits, sandbox)?;
    stage(job, program, allow, tmpdir, limits, sandbox)
}

/// The cheap half of admission, done before a slot is taken: the sandbox is usable, the
/// compiler, arguments and names, and the sizes and counts the job claims
/// ([`check_limits`]). Decodes and writes nothing. Returns the compiler to run.
///
/// # Errors
/// [`PrepareError::Refused`] for anything the client asked that this server will not do,
/// and for every job when `sandbox` cannot contain the compiler.
pub fn check(
    job: &Job,
    allow: &AllowList,
    limits: &Admission,
    sandbox: &Sandbox,
) -> Result<PathBuf, PrepareError> {
    check_sandbox(sandbox)?;
    let program = allow
        .resolve(&job.header.compiler)
        .map_err(|e| PrepareError::Refused(e.to_string()))?;
    check_request(job, limits)?;
    Ok(program)
}

/// The first part of [`check`]: every job is refused when `sandbox` cannot contain the
/// compiler.
///
/// # Errors
/// [`PrepareError::Refused`] naming the setting.
pub fn check_sandbox(sandbox: &Sandbox) -> Result<(), PrepareError> {
    sandbox
        .check()
        .map_err(|e| PrepareError::Refused(e.to_string()))
}

/// The last part of [`check`], after the compiler is known: arguments, names, and the
/// counts and sizes the job claims.
///
/// # Errors
/// [`PrepareError::Refused`] with the reason.
pub fn check_request(job: &Job, limits: &Admission) -> Result<(), PrepareError> {
    crate::args::check_server_args(&job.header.args)
        .map_err(|reason| PrepareError::Refused(format!("argument refused: {reason}")))?;
    check_names(job).map_err(|reason| PrepareError::Refused(format!("name refused: {reason}")))?;
    check_limits(job, limits).map_err(PrepareError::Refused)
}

/// Longest file or directory name a job may carry (Linux `PATH_MAX`).
pub const MAX_NAME_LEN: usize = 4096;

/// Counts and claimed (`raw_len`) sizes against `limits`, before anything is decoded.
///
/// # Errors
/// A reason naming the limit.
pub fn check_limits(job: &Job, limits: &Admission) -> Result<(), String> {
    if job.context.len() as u64 > u64::from(limits.max_context_files) {
        return Err(format!(
            "{} context files (this server takes at most {})",
            job.context.len(),
            limits.max_context_files
        ));
    }
    if job.header.extra_outputs.len() as u64 > u64::from(limits.max_extra_outputs) {
        return Err(format!(
            "{} extra outputs (this server takes at most {})",
            job.header.extra_outputs.len(),
            limits.max_extra_outputs
        ));
    }
    let names = [
        &job.header.cwd,
        &job.header.source_name,
        &job.header.output_name,
    ]
    .into_iter()
    .chain(&job.header.extra_outputs)
    .chain(job.context.iter().map(|f| &f.name));
    if let Some(long) = names.into_iter().find(|n| n.len() > MAX_NAME_LEN) {
        return Err(format!("a name of {} bytes is too long", long.len()));
    }
    let claimed = job
        .context
        .iter()
        .map(|f| f.data.claimed_len())
        .fold(job.source.claimed_len(), u64::saturating_add);
    if claimed > limits.max_job_bytes {
        return Err(format!(
            "the job's source and context files claim {claimed} bytes \
             (this server takes at most {})",
            limits.max_job_bytes
        ));
    }
    Ok(())
}

/// The work half, done holding a slot: the job directory, the source and context files
/// (decoded within `limits.max_job_bytes` in all), and the command for `program`.
///
/// # Errors
/// [`PrepareError::Refused`] for names this server will not write; [`PrepareError::Server`]
/// when staging fails here.
pub fn stage(
    job: &Job,
    program: PathBuf,
    allow: &AllowList,
    tmpdir: Option<&Path>,
    limits: &Admission,
    sandbox: &Sandbox,
) -> Result<Prepared, PrepareError> {
    let workdir = WorkDir::create(tmpdir, &job.header.cwd)?;
    // Directives-only text goes to a side path, `.hoardcc-src/<name>` (for an absolute
    // name, `/.hoardcc-src/<name>`, under the root), mapped back to `<name>` in debug
    // info, so the client's original text (a context file) can sit at `<name>` for the
    // compiler to quote in diagnostics. Names with `..` compile in place.
    // With `-g3` the side path shows in the macro table, so those compile in place
    // (identical objects, no caret lines).
    let macro_debug = job.header.args.iter().any(|a| a == "-g3" || a == "-ggdb3");
    let side_name = (job.source_kind == SourceKind::DirectivesOnly && !macro_debug)
        .then(|| side_name_for(&job.header.source_name))
        .flatten();
    let compile_name = side_name.as_deref().unwrap_or(&job.header.source_name);
    let source_path = workdir.prepare(compile_name)?;
    let output_path = workdir.prepare(&job.header.output_name)?;
    let mut extra_outputs = Vec::with_capacity(job.header.extra_outputs.len());
    for name in &job.header.extra_outputs {
        extra_outputs.push((name.clone(), workdir.prepare(name)?));
    }
    if source_path == output_path || extra_outputs.iter().any(|(_, p)| *p == source_path) {
        return Err(PrepareError::Refused(format!(
            "output would overwrite the source {:?}",
            job.header.source_name
        )));
    }
    let source = job
        .source
        .unpack(limits.max_job_bytes)
        .map_err(|e| PrepareError::Server(format!("bad source blob: {e}")))?;
    let mut job_bytes = source.len() as u64;
    let mut written: Vec<&str> = Vec::new();
    for file in &job.context {
        let path = workdir.prepare(&file.name)?;
        if path == source_path
            || path == output_path
            || extra_outputs.iter().any(|(_, p)| *p == path)
        {
            continue;
        }
        let data = file
            .data
            .unpack(limits.max_job_bytes.saturating_sub(job_bytes))
            .map_err(|e| PrepareError::Server(format!("bad context blob: {e}")))?;
        job_bytes += data.len() as u64;
        std::fs::write(&path, data)
            .map_err(|e| PrepareError::Server(format!("writing a context file: {e}")))?;
        written.push(&file.name);
    }
    // gcc quotes source lines by opening the file a line marker names: for absolute
    // names that is a path outside the job directory, so those markers are pointed at
    // the client's text under the root, and the root is mapped away again in debug info,
    // `__FILE__` and stderr. clang quotes from the text it compiles and needs none of it.
    let gcc_family =
        no_caret_flag(&job.header.compiler).is_some() && !job.header.compiler.contains("clang");
    let rooted = (side_name.is_some() && gcc_family)
        .then(|| root_markers(&source, workdir.root(), &written))
        .flatten();
    let root_in_names = rooted
        .as_ref()
        .map(|_| workdir.root().as_os_str().as_encoded_bytes().to_vec());
    let source = rooted.unwrap_or(source);
    std::fs::write(&source_path, source)
        .map_err(|e| PrepareError::Server(format!("writing the source: {e}")))?;

    let mut args: Vec<OsString> = job.header.args.iter().map(OsString::from).collect();
    // Both source kinds compile in the mirrored cwd. For `DirectivesOnly` (compiled as
    // source) DW_AT_comp_dir and file names are `root/<client path>` and the map drops
    // `root`; for `Preprocessed` input the `.i` line markers already carry the client's
    // names and the map is harmless.
    let root_map = |flag: &str, under: &str| {
        let mut map = OsString::from(flag);
        map.push(workdir.root());
        map.push(under);
        map.push("=");
        map
    };
    args.push(root_map("-fdebug-prefix-map=", ""));
    if root_in_names.is_some() {
        args.push(root_map("-fmacro-prefix-map=", ""));
    }
    let side_root = workdir.root().join(SIDE_DIR);
    match side_name.as_deref() {
        Some(side) if side.starts_with('/') => {
            // `ROOT/.hoardcc-src/abs/a.c` → `/abs/a.c`; the client's maps, rebased onto
            // both roots, come later and so win, as on the client.
            for flag in ["-fdebug-prefix-map=", "-fmacro-prefix-map="] {
                args.push(root_map(flag, &format!("/{SIDE_DIR}")));
            }
            args.extend(client_prefix_maps(&job.header.args, workdir.root()));
            args.extend(client_prefix_maps(&job.header.args, &side_root));
        }
        Some(_) => {
            args.extend(client_prefix_maps(&job.header.args, workdir.root()));
            args.push(format!("-fdebug-prefix-map={SIDE_DIR}/=").into());
            // `__BASE_FILE__` names the file compiled.
            args.push(format!("-fmacro-prefix-map={SIDE_DIR}/=").into());
        }
        None => args.extend(client_prefix_maps(&job.header.args, workdir.root())),
    }
    if job.source_kind == SourceKind::DirectivesOnly {
        // Every #include was already resolved on the client; without this the server's
        // compiler would pre-include its own stdc-predef.h a second time, which changes
        // the -g3 macro table (measured with gcc 12). It does not show in DW_AT_producer.
        args.push("-nostdinc".into());
        // Caret lines: the compiler quotes them from the files under the client's
        // names, which hold the client's original text (`job.context`); the
        // directives-only text itself sits at the side path.
        if side_name.is_none() {
            if let Some(flag) = no_caret_flag(&job.header.compiler) {
                args.push(flag.into());
            }
        }
    }
    args.push(if job.header.assemble_only { "-S" } else { "-c" }.into());
    args.push(workdir.command_name(compile_name)?.into());
    args.push("-o".into());
    args.push(workdir.command_name(&job.header.output_name)?.into());
    let command = CompileCommand {
        program,
        args,
        cwd: workdir.cwd().to_path_buf(),
        env: compiler_env(
            &allow.search_path,
            workdir.path(),
            job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ),
        containment: sandbox.containment(workdir.path()),
    };
    Ok(Prepared {
        workdir,
        command,
        output: (job.header.output_name.clone(), output_path),
        extra_outputs,
        root_in_names,
    })
}

/// Every name the job carries (source, output, extra outputs, context files) must be one
/// that no compiler reads as an option (`args::check_name`).
fn check_names(job: &Job) -> Result<(), crate::args::Refusal> {
    use crate::args::check_name;
    check_name(&job.header.source_name)?;
    check_name(&job.header.output_name)?;
    let extra = job.header.extra_outputs.iter();
    extra
        .chain(job.context.iter().map(|f| &f.name))
        .try_for_each(|n| check_name(n))
}

/// The option that turns caret lines off, for the compiler families we know by name.
fn no_caret_flag(compiler: &str) -> Option<&'static str> {
    if !is_compiler_name(compiler) {
        None
    } else if compiler.contains("clang") {
        Some("-fno-caret-diagnostics")
    } else {
        Some("-fno-diagnostics-show-caret")
    }
}

/// Where directives-only sources are written, relative to the mirrored cwd.
const SIDE_DIR: &str = ".hoardcc-src";

/// The side path for a directives-only source called `name`: `.hoardcc-src/<name>` for a
/// plain relative name, `/.hoardcc-src/<name>` (under the root) for a plain absolute one,
/// none for names with `.`, `..` or empty components (those compile in place).
fn side_name_for(name: &str) -> Option<String> {
    match name.strip_prefix('/') {
        Some(rest) => is_plain_relative(rest).then(|| format!("/{SIDE_DIR}/{rest}")),
        None => is_plain_relative(name).then(|| format!("{SIDE_DIR}/{name}")),
    }
}

/// `text` with every line marker that names one of the absolute `names` (files written
/// under `root`) naming `root/<name>` instead. `None` when nothing changes, or when the
/// root cannot be spelt in a marker without escapes.
fn root_markers(text: &[u8], root: &Path, names: &[&str]) -> Option<Vec<u8>> {
    let root = root.to_str()?;
    if root.contains(['"', '\\']) || root.chars().any(char::is_control) {
        return None;
    }
    let absolute: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with('/') && !n.contains(['"', '\\']))
        .collect();
    if absolute.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() + 4096);
    let mut changed = false;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let ours = marker_name(line).is_some_and(|n| absolute.iter().any(|a| a.as_bytes() == n));
        match line.iter().position(|&b| b == b'"').filter(|_| ours) {
            Some(quote) => {
                out.extend_from_slice(&line[..=quote]);
                out.extend_from_slice(root.as_bytes());
                out.extend_from_slice(&line[quote + 1..]);
                changed = true;
            }
            None => out.extend_from_slice(line),
        }
    }
    changed.then_some(out)
}

/// The file name of a line marker (`# 12 "name" 1 3`), if `line` is one.
fn marker_name(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"# ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = rest[digits..].strip_prefix(b" \"")?;
    if digits == 0 {
        return None;
    }
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

/// `bytes` with every `root` that is followed by `/` removed.
fn strip_root(bytes: &[u8], root: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(root) && bytes.get(i + root.len()) == Some(&b'/') {
            i += root.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// A relative path with no `.`/`..` components and no empty ones.
fn is_plain_relative(name: &str) -> bool {
    !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Prefix maps that take the client's own `-fdebug-prefix-map=OLD=NEW` (and
/// `-ffile-prefix-map=`) with an absolute OLD over to the job root: gcc applies only the
/// first matching map, checking the last-given first, so these copies (`ROOT/OLD=NEW`)
/// come after ours and win for paths under OLD, as the originals do on the client.
fn client_prefix_maps(args: &[String], root: &Path) -> Vec<OsString> {
    const MAPS: [&str; 3] = [
        "-fdebug-prefix-map=",
        "-ffile-prefix-map=",
        "-fmacro-prefix-map=",
    ];
    args.iter()
        .filter_map(|arg| {
            let flag = MAPS.iter().find(|m| arg.starts_with(*m))?;
            let value = &arg[flag.len()..];
            if !value.starts_with('/') {
                return None;
            }
            let mut out = OsString::from(*flag);
            out.push(root);
            out.push(value);
            Some(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_be_options_are_refused_before_staging() {
        use crate::proto::msg::{Blob, Codec, ContextFile, Input, JobHeader};
        let t = tempfile::tempdir().unwrap();
        let allow = AllowList::new(true, vec![], None);
        let blob = || Blob {
            codec: Codec::None,
            raw_len: 0,
            data: Vec::new(),
        };
        let base = Job {
            id: 1,
            header: JobHeader {
                compiler: "gcc".into(),
                args: vec!["-O2".into()],
                assemble_only: false,
                cwd: "/src".into(),
                source_name: "a.c".into(),
                output_name: "a.o".into(),
                extra_outputs: Vec::new(),
            },
            source_kind: SourceKind::Preprocessed,
            source: Input::Whole(blob()),
            context: Vec::new(),
            env: Vec::new(),
            compiler_id: None,
            cache: false,
        };
        type Spoil<'a> = Box<dyn Fn(&mut Job) + 'a>;
        let bad: Vec<(&str, Spoil)> = vec![
            (
                "source",
                Box::new(|j| j.header.source_name = "-fplugin=./evil.so".into()),
            ),
            (
                "source @",
                Box::new(|j| j.header.source_name = "@rsp".into()),
            ),
            (
                "empty source",
                Box::new(|j| j.header.source_name = String::new()),
            ),
            (
                "output",
                Box::new(|j| j.header.output_name = "-fplugin=x.so".into()),
            ),
            (
                "extra",
                Box::new(|j| j.header.extra_outputs = vec!["@x".into()]),
            ),
            (
                "context",
                Box::new(|j| {
                    j.context = vec![ContextFile {
                        name: "-include/etc/passwd".into(),
                        data: Input::Whole(blob()),
                    }]
                }),
            ),
        ];
        for (what, spoil) in bad {
            let mut job = base.clone();
            spoil(&mut job);
            match prepare(
                &job,
                &allow,
                Some(t.path()),
                &crate::config::Admission::default(),
                &Sandbox::new(&crate::config::ServerSettings::default()),
            ) {
                Err(PrepareError::Refused(reason)) => assert!(reason.contains("name"), "{reason}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        // Nothing was staged for any of them.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }

    #[test]
    fn absolute_markers_point_into_the_root() {
        let text = b"# 0 \"/src/p/a.c\"\n# 0 \"/build//\"\n# 1 \"/usr/include/stdio.h\" 1 3 4\n\
# 1 \"/src/p/inc/g.h\" 1\nint g;\n# 2 \"/src/p/a.c\" 2\nint x; // # 1 \"/src/p/a.c\"\n";
        let names = ["/src/p/a.c", "/src/p/inc/g.h", "rel.h"];
        let out = root_markers(text, Path::new("/tmp/j/root"), &names).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# 0 \"/tmp/j/root/src/p/a.c\"\n# 0 \"/build//\"\n# 1 \"/usr/include/stdio.h\" 1 3 4\n\
# 1 \"/tmp/j/root/src/p/inc/g.h\" 1\nint g;\n# 2 \"/tmp/j/root/src/p/a.c\" 2\n\
int x; // # 1 \"/src/p/a.c\"\n"
        );
        assert_eq!(
            root_markers(text, Path::new("/tmp/j/root"), &["rel.h"]),
            None
        );
        assert_eq!(root_markers(text, Path::new("/tmp/\"j/root"), &names), None);
        assert_eq!(
            strip_root(
                b"/tmp/j/root/src/p/a.c:2:3: warning\n/tmp/j/rootx /tmp/j/root",
                b"/tmp/j/root"
            ),
            b"/src/p/a.c:2:3: warning\n/tmp/j/rootx /tmp/j/root".to_vec()
        );
        assert_eq!(
            side_name_for("src/a.c").as_deref(),
            Some(".hoardcc-src/src/a.c")
        );
        assert_eq!(
            side_name_for("/src/a.c").as_deref(),
            Some("/.hoardcc-src/src/a.c")
        );
        assert_eq!(side_name_for("/src/../a.c"), None);
        assert_eq!(side_name_for("../a.c"), None);
        assert_eq!(side_name_for("/"), None);
    }

    #[test]
    fn client_prefix_maps_are_rebased_onto_the_root() {
        let args: Vec<String> = [
            "-g",
            "-fdebug-prefix-map=/home/u=.",
            "-ffile-prefix-map=/src=/x",
            "-fdebug-prefix-map=rel=y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let maps = client_prefix_maps(&args, Path::new("/tmp/j/root"));
        assert_eq!(
            maps,
            vec![
                OsString::from("-fdebug-prefix-map=/tmp/j/root/home/u=."),
                OsString::from("-ffile-prefix-map=/tmp/j/root/src=/x"),
            ]
        );
    }

    #[test]
    fn default_name_rule() {
        for ok in [
            "gcc",
            "g++",
            "cc",
            "c++",
            "clang",
            "clang++",
            "gcc-12",
            "x86_64-linux-gnu-gcc-12",
            "x86_64-linux-gnu-g++",
            "clang++-16",
            "clang-16.0.1",
            "arm_none-eabi-gcc",
        ] {
            assert!(is_compiler_name(ok), "{ok} should be allowed");
        }
        for bad in [
            "rm",
            "gcc-ar",
            "gcc-nm-12",
            "sh",
            "-gcc",
            "X86-gcc",
            "x86--gcc",
            "gcc-",
            "gcc12",
            "clang-tidy",
            "python3",
            "cc1",
            "",
        ] {
            assert!(!is_compiler_name(bad), "{bad} should be refused");
        }
    }

    fn exe(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn resolves_only_allowed_bare_names_on_the_search_path() {
        let t = tempfile::tempdir().unwrap();
        let gcc = exe(t.path(), "gcc-99");
        let slow = exe(t.path(), "slowcc");
        exe(t.path(), "rm");
        std::fs::write(t.path().join("cc"), "not executable").unwrap();
        let path = OsString::from(format!("relative/dir:{}", t.path().display()));
        let allow = AllowList::new(true, vec!["slowcc".into()], Some(path.clone()));
        assert_eq!(allow.resolve("gcc-99").unwrap(), gcc);
        assert_eq!(allow.resolve("slowcc").unwrap(), slow);
        assert_eq!(
            allow.resolve("rm"),
            Err(CompilerRefusal::NotAllowed("rm".into()))
        );
        assert_eq!(
            allow.resolve("cc"),
            Err(CompilerRefusal::NotFound("cc".into()))
        );
        assert!(matches!(
            allow.resolve("/bin/gcc"),
            Err(CompilerRefusal::NotAllowed(_))
        ));
        assert!(matches!(
            allow.resolve("../gcc"),
            Err(CompilerRefusal::NotAllowed(_))
        ));
        let only_extra = AllowList::new(false, vec!["slowcc".into()], Some(path));
        assert!(matches!(
            only_extra.resolve("gcc-99"),
            Err(CompilerRefusal::NotAllowed(_))
        ));
        assert_eq!(only_extra.resolve("slowcc").unwrap(), slow);
    }

    #[test]
    fn absolute_extra_entry_pins_the_file() {
        let t = tempfile::tempdir().unwrap();
        let mycc = exe(t.path(), "mycc");
        let allow = AllowList::new(
            false,
            vec![mycc.display().to_string()],
            Some(OsString::from("/nonexistent")),
        );
        assert_eq!(allow.resolve("mycc").unwrap(), mycc);
        assert!(allow.resolve("gcc").is_err());
    }
}
