//! Admin API tokens as the store keeps them: only a SHA-256 of the secret, with an id, a label and a scope.

use std::fmt;
use std::str::FromStr;

use time::OffsetDateTime;

/// What an admin token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// Read everything the admin API shows; change nothing.
    Read,
    /// Read and change.
    Write,
}

impl Scope {
    /// The word stored and shown (`read`, `write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            other => Err(format!("`{other}` is not a scope (read, write)")),
        }
    }
}

/// A stored admin token (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminToken {
    /// Its id: the first 16 hex digits of the SHA-256 of the secret.
    pub id: String,
    /// A human label (who or what uses it).
    pub label: String,
    /// What it may do.
    pub scope: Scope,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was last accepted (recorded at most once a minute).
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked; a revoked token is refused.
    pub revoked_at: Option<OffsetDateTime>,
}

impl AdminToken {
    /// The id of the token whose SHA-256 is `hash`.
    pub fn id_of(hash: &[u8; 32]) -> String {
        hash[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}
