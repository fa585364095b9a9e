//! Every way leaderrun can fail, each with the exit status it maps to.

use std::path::PathBuf;

/// Exit status for usage and configuration errors (as clap and most Unix tools use).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when etcd refuses us for good (authentication, permission, a broken lease API).
pub const EXIT_ETCD: u8 = 1;
/// Not leading and not waiting for it (--no-wait, --wait-timeout): EX_TEMPFAIL, "try again".
pub const EXIT_NOT_LEADING: u8 = 75;
/// `leaderrun leader`: nobody leads.
pub const EXIT_NO_LEADER: u8 = 3;
/// The command exists but cannot be executed (the shell's convention).
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// The command was not found (the shell's convention).
pub const EXIT_NOT_FOUND: u8 = 127;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags, bad values, a timing budget that does not fit.
    #[error("{0}")]
    Usage(String),

    #[error("command not found: {}", .0.display())]
    CommandNotFound(PathBuf),

    #[error("command not executable: {}: {reason}", .path.display())]
    CommandNotExecutable { path: PathBuf, reason: String },

    /// An etcd call that failed for good, with the client's error as its source.
    #[error("etcd: {0}")]
    Etcd(#[from] crate::etcd::EtcdError),

    /// A TLS failure retrying cannot fix: which endpoints, which files (none: TLS was not
    /// asked for, and the endpoint speaks it).
    #[error("etcd at {endpoints}: {source}{}", if files.is_empty() { String::new() } else { format!(" [{files}]") })]
    Tls {
        endpoints: String,
        files: String,
        #[source]
        source: crate::etcd::EtcdError,
    },

    /// etcd refused a key range to our user: the role lacks a permission.
    #[error("etcd: permission denied on the key range {range} (the user's role needs readwrite on it): {source}")]
    Denied {
        range: String,
        #[source]
        source: crate::etcd::EtcdError,
    },

    /// `leaderrun resign`: the leader did not hand over (nobody to hand over to, or no answer).
    #[error("{0}")]
    NoHandover(String),

    /// A resource limit of this host leaves leaderrun too little (`ulimit -s`, `ulimit -n`).
    #[error("{0}")]
    Limit(String),

    /// The local machinery failed (signal handlers, fork).
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit status this error ends leaderrun with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::CommandNotFound(_) => EXIT_NOT_FOUND,
            Error::CommandNotExecutable { .. } => EXIT_NOT_EXECUTABLE,
            Error::Etcd(_)
            | Error::Tls { .. }
            | Error::Denied { .. }
            | Error::NoHandover(_)
            | Error::Limit(_)
            | Error::Io { .. } => EXIT_ETCD,
        }
    }

    /// A fatal etcd error met while using the key range `range`: a refused permission names it.
    pub fn on_range(range: String, source: crate::etcd::EtcdError) -> Self {
        if source.is_denied() {
            Error::Denied { range, source }
        } else {
            Error::Etcd(source)
        }
    }

    /// A fatal etcd error on `connection`: a TLS failure names the endpoints and the files.
    pub fn on_connection(
        connection: &crate::etcd::Connection,
        source: crate::etcd::EtcdError,
    ) -> Self {
        if source.kind() != crate::etcd::Kind::Tls {
            return Error::Etcd(source);
        }
        let files = connection.tls.as_ref().map_or(String::new(), |t| {
            let named = [
                ("--cacert", &t.cacert),
                ("--cert", &t.cert),
                ("--key", &t.key),
            ];
            let given: Vec<String> = named
                .iter()
                .filter_map(|(flag, p)| p.as_ref().map(|p| format!("{flag} {}", p.display())))
                .collect();
            if t.cacert.is_none() {
                [vec!["the system's roots".to_string()], given]
                    .concat()
                    .join(", ")
            } else {
                given.join(", ")
            }
        });
        Error::Tls {
            endpoints: connection.endpoints.join(","),
            files,
            source,
        }
    }

    pub fn io(context: &'static str, source: std::io::Error) -> Self {
        Error::Io { context, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_documented_table() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(Error::CommandNotFound("x".into()).exit_code(), 127);
        let e = Error::CommandNotExecutable {
            path: "x".into(),
            reason: "y".into(),
        };
        assert_eq!(e.exit_code(), 126);
        let refused = crate::etcd::EtcdError::TimedOut {
            what: "x",
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(Error::from(refused).exit_code(), 1);
    }
}
