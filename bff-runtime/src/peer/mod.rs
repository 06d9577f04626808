//! Peer images: a pod that starts with an empty store copies a ready replica's
//! store instead of replaying every topic from the earliest offset.
//!
//! A ready pod serves a consistent image of its store ([`crate::store::image`]:
//! rows, held rows, the index, the embeds' reverse index, the change log and the
//! offsets they all match, read in one transaction) on its metrics port, to
//! requests that carry the experience's peer token. A new pod asks its peers in
//! turn ([`copy`]), verifies what it gets (definition, completeness, checksum)
//! and consumes from the image's offsets; with no peer to copy from, it replays.

pub mod copy;
pub mod serve;

use std::path::Path;

/// Why a copy from a peer did or did not happen: a metric's label, from this fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The store was copied from a peer.
    Copied,
    /// No token to present: the pod was given no peer Secret.
    NoToken,
    /// No address to ask (none resolved, or only the pod itself).
    NoPeer,
    /// A peer could not be reached, or its answer stopped part way.
    Unreachable,
    /// A peer answered that it is not ready (still replaying, or busy).
    NotReady,
    /// A peer refused the token.
    Unauthorized,
    /// A peer runs another definition (the other set, during a rebuild).
    OtherDefinition,
    /// An image that ended before its trailer.
    Truncated,
    /// An image whose checksum does not match its contents.
    Corrupted,
    /// An image that is not one, or any other failure.
    Invalid,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Copied => "copied",
            Outcome::NoToken => "no_token",
            Outcome::NoPeer => "no_peer",
            Outcome::Unreachable => "unreachable",
            Outcome::NotReady => "not_ready",
            Outcome::Unauthorized => "unauthorized",
            Outcome::OtherDefinition => "other_definition",
            Outcome::Truncated => "truncated",
            Outcome::Corrupted => "corrupted",
            Outcome::Invalid => "invalid",
        }
    }
}

/// The token in `path` (a mounted Secret's file), trimmed; `None` when the file is
/// missing or empty. Read on every use, so a rotated Secret takes effect.
pub fn read_token(path: &Path) -> Option<String> {
    let token = std::fs::read_to_string(path).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// Compares two tokens in time that depends only on their lengths.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("", "a"));
    }

    #[test]
    fn a_missing_or_blank_token_file_gives_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        assert_eq!(read_token(&path), None);
        std::fs::write(&path, " \n").unwrap();
        assert_eq!(read_token(&path), None);
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read_token(&path).as_deref(), Some("s3cret"));
    }
}
