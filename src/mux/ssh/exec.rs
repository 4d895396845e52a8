//! Stage: connections, one-shot remote commands. [`Connection::exec_capture`] runs a
//! command on an exec channel of an authenticated connection, feeds it a bounded input
//! and collects its stdout, stderr and exit status, all under one deadline. It serves
//! the setup commands (`hoardcc install-server` copies the binary this way, no scp), not
//! compile jobs, which go over lanes. Neighbours: `mux::ssh` (the connection and its
//! channel opening), `cli::install` (the caller).

use std::time::Duration;

use russh::ChannelMsg;
use tokio::time::{timeout, timeout_at, Instant};

use super::{Connection, SshError};

/// What a remote command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit status sshd reported; `None` when it sent none (killed by a signal, or
    /// the channel closed first).
    pub status: Option<u32>,
    /// The signal that ended the command, when sshd reported one (e.g. `KILL`).
    pub signal: Option<String>,
    /// Standard output, at most the caller's limit (the rest is read and dropped).
    pub stdout: Vec<u8>,
    /// Standard error, at most the caller's limit.
    pub stderr: Vec<u8>,
    /// Whether stdout or stderr was cut at the limit.
    pub truncated: bool,
}

impl ExecOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (lossy), trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }

    /// How it ended, for messages: `exit status 3`, `killed by signal KILL`, or `no exit
    /// status`.
    pub fn describe_end(&self) -> String {
        match (&self.status, &self.signal) {
            (Some(s), _) => format!("exit status {s}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            (None, None) => "no exit status".to_string(),
        }
    }
}

/// Append `data` to `buf` up to `limit` bytes; note when something was dropped.
fn keep(buf: &mut Vec<u8>, data: &[u8], limit: usize, truncated: &mut bool) {
    let room = limit.saturating_sub(buf.len());
    if data.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

impl Connection {
    /// Run `command` (through the remote login shell, as sshd does for every exec) with
    /// `input` on its stdin, then EOF, and collect what it prints (each stream at most
    /// `limit` bytes) until the channel closes. The whole exchange, upload included, is
    /// bounded by `deadline`; on expiry the channel is closed.
    ///
    /// # Errors
    /// [`SshError::ExecRefused`] when sshd refuses the exec request, [`SshError::Timeout`]
    /// when `deadline` passes, [`SshError::Disconnected`] when the connection ends first,
    /// plus those of opening a channel.
    ///
    /// # Cancel safety
    /// Dropping the future drops the channel halves without CLOSE; the remote command then
    /// lives until the connection ends. Callers run it to completion (it is bounded).
    pub async fn exec_capture(
        &self,
        command: &str,
        input: &[u8],
        limit: usize,
        deadline: Duration,
    ) -> Result<ExecOutput, SshError> {
        let host = self.inner.dest.hostname.clone();
        let until = Instant::now() + deadline;
        let channel = self.open_session().await?;
        let sent = self.io("exec request", channel.exec(true, command)).await;
        if let Err(e) = sent {
            let _ = timeout(self.inner.io_timeout, channel.close()).await;
            return Err(e);
        }
        let (mut read, write) = channel.split();

        // The reader drains the channel all the time (an unread channel stalls the whole
        // connection, notes/russh.md §5) while the writer uploads.
        let reader = async {
            let mut out = ExecOutput::default();
            let mut accepted = false;
            while let Some(msg) = read.wait().await {
                match msg {
                    ChannelMsg::Success => accepted = true,
                    ChannelMsg::Failure if !accepted => return Err(()),
                    ChannelMsg::Data { data } => {
                        keep(&mut out.stdout, &data, limit, &mut out.truncated)
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        keep(&mut out.stderr, &data, limit, &mut out.truncated)
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        out.signal = Some(format!("{signal_name:?}"))
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            Ok(out)
        };
        let writer = async {
            write.data(input).await?;
            write.eof().await
        };
        let exchange = async {
            tokio::pin!(reader);
            tokio::select! {
                // The command ended (or was refused) before taking all its input.
                r = &mut reader => r,
                w = writer => {
                    if let Err(e) = w {
                        // The remote side closed early; its output says why.
                        tracing::debug!(host = %host, "exec input not fully sent: {e}");
                    }
                    reader.await
                }
            }
        };
        match timeout_at(until, exchange).await {
            Err(_) => {
                let _ = timeout(self.inner.io_timeout, write.close()).await;
                Err(SshError::Timeout {
                    host,
                    what: "remote command",
                })
            }
            Ok(Err(())) => Err(SshError::ExecRefused {
                host,
                command: command.to_string(),
            }),
            Ok(Ok(out)) => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_bounds_each_stream() {
        let mut buf = Vec::new();
        let mut cut = false;
        keep(&mut buf, b"hello", 8, &mut cut);
        assert!(!cut);
        keep(&mut buf, b"world", 8, &mut cut);
        assert_eq!(buf, b"hellowor");
        assert!(cut);
    }

    #[test]
    fn describe_end_names_status_or_signal() {
        let mut o = ExecOutput {
            status: Some(3),
            ..Default::default()
        };
        assert_eq!(o.describe_end(), "exit status 3");
        assert!(!o.success());
        o.status = None;
        o.signal = Some("KILL".into());
        assert_eq!(o.describe_end(), "killed by signal KILL");
    }
}
