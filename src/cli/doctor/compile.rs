//! `hoardcc doctor`'s last two steps: each local compiler's identity against what the
//! server offers (`cli::compilers`), and a real compile of a tiny C file on the lane the
//! earlier steps opened. Neighbours: `cli::doctor` (the walk and its checklist),
//! `mux::lane` (the job runs as the mux would run it).

use super::*;

/// One line per local compiler: the server's compiler with its identity, or why none.
/// A mismatch is not fatal (other compilers still go there) unless nothing matches.
pub(super) async fn check_compilers(
    list: &mut Checklist<'_>,
    lane: &mut Lane,
    settings: &SshSettings,
    server: &str,
) -> Result<(), Stop> {
    let offered = match lane.compilers(settings.io_timeout).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            return list.skip(
                "compilers",
                "the server cannot list its compilers (stock distccd, or an older hoardcc)".into(),
            )
        }
        Err(e) => {
            return list.fail(
                "compilers",
                format!("asking for the server's compilers: {e}"),
                format!("see the server's log on {server}"),
            )
        }
    };
    let path = std::env::var_os("PATH");
    let locals = compilers::local_compilers(path.as_deref()).await;
    if locals.is_empty() {
        let names = compilers::LOCAL_NAMES.join(", ");
        return list.skip("compilers", format!("none of {names} is on PATH here"));
    }
    let matches = compilers::match_all(&locals, &offered);
    for (m, local) in matches.iter().zip(&locals) {
        let name = format!("compiler {}", m.name);
        match (&m.server, &m.local) {
            (Some(there), Some(label)) => list.pass(
                name,
                format!(
                    "{label} at {}; on the server: {there} ({})",
                    local.path.display(),
                    m.server_path.as_deref().unwrap_or("?")
                ),
            )?,
            _ => list.warn(
                name,
                m.mismatch.clone().unwrap_or_default(),
                format!(
                    "jobs for {} compile locally until {server} has the same compiler (same \
                     version, target and configuration) on its PATH, under its own name \
                     or a versioned one such as {}-MAJOR",
                    m.name,
                    crate::proto::identity::tool_of(&m.name)
                ),
            )?,
        }
    }
    if !matches.iter().any(|m| m.matched()) {
        return list.fail(
            "compilers",
            format!("no compiler of this machine has its match on {server}"),
            format!("install the compilers you build with on {server}, or build locally"),
        );
    }
    Ok(())
}

/// Bound on each channel step and on the compile round trip.
pub(super) const DOCTOR_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The tiny C file compiled by the round trip.
const PROBE_SOURCE: &[u8] = b"int hoardcc_doctor(int x) { return x * 6 + 7; }\n";
/// The object it makes.
const PROBE_OUTPUT: &str = "hoardcc-doctor.o";
/// The compiler it is compiled with (on the server's PATH, in its default allow-list).
const PROBE_COMPILER: &str = "cc";

fn probe_spec(lane: &Lane) -> JobSpec {
    let native = lane.wire() == crate::proto::msg::Wire::Native;
    let source_name = if native {
        "hoardcc-doctor.c"
    } else {
        "hoardcc-doctor.i"
    };
    JobSpec {
        header: JobHeader {
            compiler: PROBE_COMPILER.into(),
            args: vec!["-O2".into()],
            assemble_only: false,
            cwd: "/tmp/hoardcc-doctor".into(),
            source_name: source_name.into(),
            output_name: PROBE_OUTPUT.into(),
            extra_outputs: vec![],
        },
        distcc_argv: [PROBE_COMPILER, "-O2", "-c", source_name, "-o", PROBE_OUTPUT]
            .map(String::from)
            .to_vec(),
        env: vec![],
        context: vec![],
        compiler_id: None,
        // A cached answer would not show that the server compiles.
        cache: false,
    }
}

pub(super) async fn check_compile(
    list: &mut Checklist<'_>,
    lane: &mut Lane,
    settings: &SshSettings,
    server: &str,
) -> Result<(), Stop> {
    let spec = probe_spec(lane);
    let start = Instant::now();
    let ran = tokio::time::timeout(
        settings.io_timeout,
        lane.run(
            &spec,
            &crate::mux::upload::Source::Whole(PROBE_SOURCE.to_vec()),
            None,
        ),
    )
    .await;
    let name = "compile";
    let compiler = PROBE_COMPILER;
    let done = match ran {
        Err(_) => {
            return list.fail(
                name,
                format!("no answer within {:?}", settings.io_timeout),
                "the server is overloaded or stuck; see its log (journalctl, or sshd's)".into(),
            )
        }
        Ok(Err(TransportError::Busy { .. })) => {
            return list.warn(
                name,
                "the server is busy (every compile slot taken)".into(),
                "nothing is wrong: try again when its builds finish".into(),
            )
        }
        Ok(Err(TransportError::Refused { reason, .. })) => {
            return list.fail(
                name,
                format!("the server refused `{compiler}`: {reason}"),
                "allow the compiler in the server's server.toml (see hoardcc-serve(8))".into(),
            )
        }
        Ok(Err(e @ (TransportError::Closed | TransportError::Proto(_)))) => {
            return list.fail(
                name,
                format!("the job got no answer: {e}"),
                format!(
                    "is the server program installed on {server}? a stock distccd must be on \
                     its PATH; better, add the hoardcc subsystem"
                ),
            )
        }
        Ok(Err(e)) => {
            return list.fail(
                name,
                e.to_string(),
                format!("see the server's log on {server}"),
            )
        }
        Ok(Ok(done)) => match done.unpacked(MAX_BLOB) {
            Ok(d) => d,
            Err(e) => {
                return list.fail(
                    name,
                    format!("the answer does not decode: {e}"),
                    format!("install this hoardcc version on {server}"),
                )
            }
        },
    };
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let object = done
        .outputs
        .iter()
        .find(|o| o.name == PROBE_OUTPUT)
        .and_then(|o| o.data.raw_bytes());
    match object {
        Some(obj) if done.exit_code == 0 && !obj.is_empty() => list.pass(
            name,
            format!(
                "`{compiler} -O2 -c hoardcc-doctor.c` gave a {}-byte object in {ms:.0} ms",
                obj.len()
            ),
        ),
        _ => {
            let stderr = String::from_utf8_lossy(done.stderr.raw_bytes().unwrap_or_default());
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            list.fail(
                name,
                format!(
                    "`{compiler}` exited {} on the server without an object: {}",
                    done.exit_code,
                    first.chars().take(300).collect::<String>()
                ),
                format!("is a C compiler installed on {server}? (`ssh {server} cc --version`)"),
            )
        }
    }
}
