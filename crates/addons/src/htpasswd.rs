//! Apache htpasswd files, as mitmproxy 12's `proxyauth=@path` reads them: one `user:hash` per
//! line, bcrypt (`$2y$`, `$2b$`, `$2a$`) or SHA-1 (`{SHA}` + base64); blank lines and `#`
//! comments skipped.

use std::collections::HashMap;

/// A password hash from an htpasswd file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    /// `$2y$...`, `$2b$...`, `$2a$...`.
    Bcrypt(String),
    /// `{SHA}` followed by the base64 of the SHA-1 digest (insecure; Apache's `-s`).
    Sha1(String),
}

/// The users of an htpasswd file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Htpasswd {
    users: HashMap<String, Hash>,
}

impl Htpasswd {
    /// Parses the file's text; the error names the line (its number and, for a bad format,
    /// the user).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let (user, hash) = line
                .split_once(':')
                .filter(|(u, _)| !u.is_empty())
                .ok_or_else(|| format!("line {n} is not user:hash"))?;
            // Apache allows a trailing `:comment`.
            let hash = hash.split(':').next().unwrap_or_default();
            let hash = if let Some(b64) = hash.strip_prefix("{SHA}") {
                Hash::Sha1(b64.to_owned())
            } else if hash.starts_with("$2y$")
                || hash.starts_with("$2b$")
                || hash.starts_with("$2a$")
            {
                Hash::Bcrypt(hash.to_owned())
            } else {
                return Err(format!(
                    "line {n}: unsupported hash for user {user:?} (bcrypt or {{SHA}} only)"
                ));
            };
            users.insert(user.to_owned(), hash);
        }
        Ok(Self { users })
    }

    /// Reads and parses an htpasswd file.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read htpasswd file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("htpasswd file {}: {e}", path.display()))
    }

    /// How many users the file has.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `user`'s. A bcrypt check costs milliseconds of CPU: call it
    /// off the worker thread.
    pub fn check(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            None => false,
            Some(Hash::Bcrypt(h)) => bcrypt::verify(password, h).unwrap_or(false),
            Some(Hash::Sha1(expected)) => {
                use base64::Engine as _;
                use sha1::Digest as _;
                let digest = sha1::Sha1::digest(password.as_bytes());
                let got = base64::engine::general_purpose::STANDARD.encode(digest);
                constant_time_eq(got.as_bytes(), expected.as_bytes())
            }
        }
    }
}

/// Equality whose time depends only on the lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_and_sha1_users() {
        let bc = bcrypt::hash("s3cret", 4).unwrap();
        let h = Htpasswd::parse(&format!("# users\n\nalice:{bc}:comment\n")).unwrap();
        assert_eq!(h.len(), 1);
        assert!(h.check("alice", "s3cret"));
        assert!(!h.check("alice", "wrong"));
        assert!(!h.check("nobody", "s3cret"));
        // `htpasswd -s`: {SHA} + base64(sha1(password)).
        let sha = {
            use base64::Engine as _;
            use sha1::Digest as _;
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b"pass:word"))
        };
        let h = Htpasswd::parse(&format!("bob:{{SHA}}{sha}")).unwrap();
        assert!(h.check("bob", "pass:word"));
        assert!(!h.check("bob", "pass"));
    }

    #[test]
    fn malformed_files_name_the_line() {
        assert_eq!(
            Htpasswd::parse("nocolon").unwrap_err(),
            "line 1 is not user:hash"
        );
        assert_eq!(
            Htpasswd::parse("\nu:$apr1$x$y").unwrap_err(),
            "line 2: unsupported hash for user \"u\" (bcrypt or {SHA} only)"
        );
        assert!(Htpasswd::parse(":x").is_err());
    }
}
