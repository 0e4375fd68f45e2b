//! The users file: Dovecot's passwd-file convention, one user a line.
//!
//! ```text
//! # comments and blank lines are ignored
//! alice@example.com:{PLAIN}secret:db1
//! bob@example.com:{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$hash…:db1
//! carol@example.com:{PLAIN}secret:db2:quota=1000000
//! ```
//!
//! Fields: the address (the login name and the LMTP recipient), the password as `{SCHEME}secret`, the database
//! the user's mailbox lives in, and optional extra fields (`quota=BYTES`: the mailbox's prohibit-send-receive
//! quota). Schemes: `PLAIN` (also spelled `CLEARTEXT`) and `ARGON2ID` (a PHC string, as `doveadm pw -s
//! ARGON2ID` and `mailserver --hash-password` print it).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, PasswordHash, PasswordVerifier};

/// How a password is stored.
#[derive(Clone)]
pub enum Secret {
    /// In clear (`{PLAIN}` / `{CLEARTEXT}`).
    Plain(String),
    /// A salted Argon2id hash, as a PHC string (`{ARGON2ID}`).
    Argon2id(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(..)"),
            Secret::Argon2id(_) => f.write_str("Secret::Argon2id(..)"),
        }
    }
}

/// One user of the file.
#[derive(Clone, Debug)]
pub struct User {
    /// The address: login name and LMTP recipient.
    pub address: String,
    /// The password.
    pub secret: Secret,
    /// The database holding the user's mailbox.
    pub database: String,
    /// The prohibit-send-receive quota in bytes, if the file sets one.
    pub quota: Option<u64>,
}

impl User {
    /// True when `password` is this user's password.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.secret {
            Secret::Plain(p) => constant_time_eq(p.as_bytes(), password),
            Secret::Argon2id(phc) => match PasswordHash::new(phc) {
                Ok(hash) => Argon2::default().verify_password(password, &hash).is_ok(),
                Err(_) => false,
            },
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A line of the users file that could not be read.
#[derive(Debug)]
pub struct UsersError {
    /// 1-based line number (0 when the file itself could not be read).
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

impl fmt::Display for UsersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 { write!(f, "{}", self.reason) } else { write!(f, "line {}: {}", self.line, self.reason) }
    }
}

impl std::error::Error for UsersError {}

/// The users, by lower-cased address.
#[derive(Debug, Default)]
pub struct Users {
    by_address: HashMap<String, User>,
}

impl Users {
    /// Reads the users file at `path`.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsersError { line: 0, reason: format!("cannot read {}: {e}", path.display()) })?;
        Users::parse(&text)
    }

    /// Parses the text of a users file.
    pub fn parse(text: &str) -> Result<Users, UsersError> {
        let mut by_address = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| UsersError { line: line_no, reason };
            let user = parse_line(line).map_err(err)?;
            let key = user.address.to_lowercase();
            if by_address.insert(key, user).is_some() {
                return Err(err("the address appears twice".into()));
            }
        }
        Ok(Users { by_address })
    }

    /// The user with `address` (case-insensitively).
    pub fn get(&self, address: &str) -> Option<&User> {
        self.by_address.get(&address.to_lowercase())
    }

    /// Every user.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.by_address.values()
    }
}

fn parse_line(line: &str) -> Result<User, String> {
    // The address never contains ':'; the secret may (a PHC string does not, but a plain password might), so
    // the database and extra fields are taken from the right.
    let (address, rest) = line.split_once(':').ok_or("expected address:{SCHEME}secret:database")?;
    let mut fields: Vec<&str> = rest.rsplitn(3, ':').collect();
    fields.reverse();
    // fields: [secret, database] or [secret, database, extra] — but a secret containing ':' makes rsplitn
    // ambiguous when extras are present; extras are recognised by their `key=value` form.
    let (secret, database, extra) = match fields.as_slice() {
        [secret, database] => (*secret, *database, None),
        [a, b, c] if c.contains('=') => (*a, *b, Some(*c)),
        [a, b, c] => {
            // No extra field: the secret itself contained ':'.
            let secret = &rest[..a.len() + 1 + b.len()];
            (secret, *c, None)
        }
        _ => return Err("expected address:{SCHEME}secret:database".into()),
    };
    let address = address.trim();
    if address.is_empty() || !address.contains('@') {
        return Err(format!("{address:?} is not an address"));
    }
    let secret = parse_secret(secret)?;
    let database = database.trim();
    mailstore::store::validate_name(database).map_err(|e| e.to_string())?;
    let mut quota = None;
    if let Some(extra) = extra {
        for field in extra.split_whitespace() {
            match field.split_once('=') {
                Some(("quota", v)) => {
                    quota = Some(v.parse::<u64>().map_err(|_| format!("quota {v:?} is not a number of bytes"))?)
                }
                _ => return Err(format!("unknown extra field {field:?} (known: quota=BYTES)")),
            }
        }
    }
    Ok(User { address: address.to_owned(), secret, database: database.to_owned(), quota })
}

fn parse_secret(field: &str) -> Result<Secret, String> {
    let Some(rest) = field.strip_prefix('{') else {
        return Err("the password must start with {SCHEME} (PLAIN or ARGON2ID)".into());
    };
    let (scheme, secret) = rest.split_once('}').ok_or("unterminated {SCHEME}")?;
    match scheme.to_ascii_uppercase().as_str() {
        "PLAIN" | "CLEARTEXT" => Ok(Secret::Plain(secret.to_owned())),
        "ARGON2ID" => {
            let hash = PasswordHash::new(secret).map_err(|e| format!("bad ARGON2ID hash: {e}"))?;
            if hash.algorithm.as_str() != "argon2id" {
                return Err(format!("an ARGON2ID hash names algorithm {}", hash.algorithm));
            }
            Ok(Secret::Argon2id(secret.to_owned()))
        }
        other => Err(format!("unsupported password scheme {other:?} (supported: PLAIN, CLEARTEXT, ARGON2ID)")),
    }
}

/// `{ARGON2ID}` followed by a fresh salted hash of `password`, ready for a users file.
pub fn hash_password(password: &str) -> Result<String, String> {
    // 16 random bytes (a v4 UUID's generator is the operating system's).
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).map_err(|e| e.to_string())?;
    let hash = Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| e.to_string())?;
    Ok(format!("{{ARGON2ID}}{hash}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_verifies() {
        let hashed = hash_password("s3cret").unwrap();
        let text =
            format!("# users\nalice@example.com:{{PLAIN}}pa:ss:db1\nbob@example.com:{hashed}:db2:quota=1000\n\n");
        let users = Users::parse(&text).unwrap();
        let alice = users.get("ALICE@example.com").unwrap();
        assert!(alice.verify(b"pa:ss"));
        assert!(!alice.verify(b"pa:sx"));
        assert_eq!(alice.database, "db1");
        let bob = users.get("bob@example.com").unwrap();
        assert!(bob.verify(b"s3cret"));
        assert!(!bob.verify(b"wrong"));
        assert_eq!(bob.quota, Some(1000));
        assert!(Users::parse("x@y:{MD5}abc:db1").is_err());
        assert!(Users::parse("x@y:nope:db1").is_err());
        assert!(Users::parse("x@y:{PLAIN}a:../etc").is_err());
    }
}
