//! The messages between the parts that steer geolb: the admin API and signals ask the supervisor
//! for reloads and the cluster task for operator commands; the supervisor hands a new configuration
//! to the cluster task; the data path reports failing nodes to it.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::config::Config;

/// An operator's command to the cluster task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drain,
    Disable,
    Enable,
    Promote,
    Check,
}

impl Action {
    pub fn parse(word: &str) -> Option<Action> {
        Some(match word {
            "drain" => Action::Drain,
            "disable" => Action::Disable,
            "enable" => Action::Enable,
            "promote" => Action::Promote,
            "check" => Action::Check,
            _ => return None,
        })
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no node named `{0}`")]
    UnknownNode(String),
    #[error("`{0}` is not a master candidate")]
    NotCandidate(String),
    #[error("`{0}` is not up and active: it cannot be master now")]
    NotReady(String),
    #[error("the cluster task is not running")]
    Stopped,
}

/// A command and where its answer goes.
pub struct Command {
    pub node: String,
    pub action: Action,
    pub reply: oneshot::Sender<Result<(), CommandError>>,
}

/// A new configuration for the cluster task, and where to say it is in force.
pub struct Reconfigure {
    pub config: Arc<Config>,
    /// How to speak TLS to `https://` nodes, built from the new configuration (certificate files
    /// are read again: a rotated CA bundle or client certificate is put in force).
    pub node_tls: Arc<rustls::ClientConfig>,
    pub done: oneshot::Sender<()>,
}

/// A report from the data path to the cluster task.
#[derive(Debug)]
pub enum Report {
    /// `consecutive_failures` live failures in a row on this node (by id); `cause`: what the last
    /// one was, when more than a failed exchange (an OGC exception, a deaf replica).
    Failing {
        node: u64,
        failures: u32,
        cause: Option<String>,
    },
    /// A connection to this node (by id) was refused: nothing listens on its port.
    Refused { node: u64 },
}

/// Where a reload takes its configuration from.
#[derive(Debug)]
pub enum Source {
    /// Read the file again (with the `GEOLB_*` overrides), as `geolb check` would.
    File,
    /// This configuration, already parsed.
    Given(Box<Config>),
}

/// A reload asked of the supervisor, and where its outcome goes.
pub struct ReloadRequest {
    pub source: Source,
    pub reply: oneshot::Sender<Result<(), String>>,
}
