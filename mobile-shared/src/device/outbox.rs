//! The outbox: commands that need the server (claim a customer, approve, ...) queued while
//! offline, each with the idempotency key it keeps for life, so that replaying a command whose
//! answer was lost in a crash or a dropped connection cannot run it twice.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::DeviceError;
use super::store::{read_optional, remove_durably, write_atomic};
use crate::api::Problem;

/// A command waiting to be sent: `POST <path>` with a JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Position in the outbox; commands are sent in this order.
    pub sequence: u64,
    /// The `Idempotency-Key` header, fixed when the command was queued.
    pub idempotency_key: String,
    /// The path under the server's base URL, e.g. `/api/v1/customers/{id}/claim`.
    pub path: String,
    /// The request body.
    pub body: Value,
    /// When the user asked for it (RFC 3339, the phone's clock).
    pub queued_at: String,
}

/// What became of a command the server answered.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    /// The command.
    pub command: Command,
    /// The HTTP status.
    pub status: u16,
    /// The response body on success.
    pub body: Value,
    /// Why the server refused it (a 4xx other than 401, 408 and 429); such a command is final
    /// and leaves the outbox, like a success.
    pub problem: Option<Problem>,
}

impl CommandOutcome {
    /// Whether the server carried the command out.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The commands on disk, oldest first.
pub(crate) struct Outbox {
    dir: PathBuf,
    pending: Vec<Command>,
}

impl Outbox {
    pub(crate) fn open(dir: &Path) -> Result<Self, DeviceError> {
        let mut pending = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(bytes) = read_optional(&path)? else {
                continue;
            };
            let command: Command = serde_json::from_slice(&bytes)
                .map_err(|e| DeviceError::Corrupt(format!("{}: {e}", path.display())))?;
            pending.push(command);
        }
        pending.sort_by_key(|c| c.sequence);
        Ok(Self {
            dir: dir.to_path_buf(),
            pending,
        })
    }

    fn file(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("{sequence:020}.json"))
    }

    /// Queues a command durably: when this returns, the command survives a crash.
    pub(crate) fn push(&mut self, path: &str, body: Value) -> Result<Command, DeviceError> {
        let sequence = self.pending.last().map_or(1, |c| c.sequence + 1);
        let command = Command {
            sequence,
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            path: path.to_string(),
            body,
            queued_at: chrono::Utc::now().to_rfc3339(),
        };
        let bytes =
            serde_json::to_vec_pretty(&command).map_err(|e| DeviceError::Corrupt(e.to_string()))?;
        write_atomic(&self.file(sequence), &bytes)?;
        self.pending.push(command.clone());
        Ok(command)
    }

    /// The commands not yet answered, oldest first.
    pub(crate) fn pending(&self) -> &[Command] {
        &self.pending
    }

    /// Removes a command that got its final answer.
    pub(crate) fn remove(&mut self, sequence: u64) -> Result<(), DeviceError> {
        remove_durably(&self.file(sequence))?;
        self.pending.retain(|c| c.sequence != sequence);
        Ok(())
    }
}
