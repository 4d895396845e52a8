//! Stage: lane, the server's compiler list — [`Lane::compilers`] asks an idle native
//! lane which compilers the server offers (`Message::ListCompilers`, answered by
//! `Message::Compilers`), for `hoardcc ping` and `doctor`. Neighbours: `mux::lane` (the
//! lane), `subsystem::compilers` (the server's answer), `proto::identity` (the data and
//! `find_match`).

use std::time::Duration;

use super::{Lane, LaneIo, TransportError, COMPILERS_CAP};
use crate::proto::frame;
use crate::proto::identity::{OfferedCompiler, MAX_OFFERED};
use crate::proto::msg::Message;

impl Lane {
    /// The compilers the server offers, with their identities (for `hoardcc ping` and
    /// `doctor`): one `ListCompilers` on this idle lane, answered within `timeout`.
    /// `Ok(None)` when the server cannot tell (a distcc lane, or a hoardcc server without
    /// the "compilers" cap).
    ///
    /// # Errors
    /// The lane failed or the server answered something else.
    pub async fn compilers(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Vec<OfferedCompiler>>, TransportError> {
        let knows = self
            .server_hello
            .as_ref()
            .is_some_and(|h| h.caps.iter().any(|c| c == COMPILERS_CAP));
        let LaneIo::Native { stream, .. } = &mut self.io else {
            return Ok(None);
        };
        if !knows {
            return Ok(None);
        }
        tokio::time::timeout(timeout, async {
            frame::write_message(stream, &Message::ListCompilers).await?;
            loop {
                match frame::read_message(stream).await? {
                    Some(Message::Compilers { mut list }) => {
                        list.truncate(MAX_OFFERED);
                        return Ok(Some(list));
                    }
                    Some(Message::Heartbeat { .. }) => continue,
                    Some(other) => {
                        return Err(TransportError::Unexpected(
                            format!("{other:?}").chars().take(80).collect(),
                        ))
                    }
                    None => return Err(TransportError::Closed),
                }
            }
        })
        .await
        .map_err(|_| TransportError::Timeout("the server's compiler list"))?
    }
}
