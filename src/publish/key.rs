//! The TSIG key updates are signed with: read from its file, which must not be readable by
//! everyone, in either of the two forms admins have: the key clause `tsig-keygen` writes
//! (`key "name" { algorithm hmac-sha256; secret "base64"; };`, as BIND's and Knot's
//! `keymgr -t` output give it) or the base64 secret alone. Names and algorithm in the config
//! take precedence over the file's.

use crate::config::{KeyAlgorithm, PublishConfig};
use hickory_proto::rr::Name;
use hickory_proto::rr::TSigner;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// How far the signing time may be from the server's clock (RFC 8945 10: 300 s).
const FUDGE_SECS: u16 = 300;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("TSIG key file {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "TSIG key file {path} is readable by every user (mode {mode:o}): chmod o-rwx it, virtdns will not use a secret others can read"
    )]
    WorldReadable { path: PathBuf, mode: u32 },
    #[error("TSIG key file {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// A key ready to sign with.
#[derive(Clone)]
pub struct Key {
    pub(crate) name: Name,
    pub(crate) algorithm: KeyAlgorithm,
    pub(crate) signer: TSigner,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} {})", self.name, self.algorithm)
    }
}

impl Key {
    /// Reads the key `config` names; refuses a file others can read.
    pub(crate) fn load(config: &PublishConfig) -> Result<Key, KeyError> {
        let path = &config.key_file;
        let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o004 != 0 {
            return Err(KeyError::WorldReadable {
                path: path.clone(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?;
        Key::parse(&text, config, path)
    }

    fn parse(text: &str, config: &PublishConfig, path: &Path) -> Result<Key, KeyError> {
        let invalid = |problem: String| KeyError::Invalid {
            path: path.to_owned(),
            problem,
        };
        let file = parse_key_text(text).map_err(invalid)?;
        let name = config
            .key_name
            .as_ref()
            .map(|n| n.0.clone())
            .or(file.name)
            .ok_or_else(|| invalid("the file holds no key name: set [publish] key_name".into()))?;
        let algorithm = match (config.key_algorithm, file.algorithm) {
            (Some(a), _) => a,
            (None, Some(a)) => a.parse().map_err(invalid)?,
            (None, None) => KeyAlgorithm::HmacSha256,
        };
        let secret = data_encoding::BASE64
            .decode(file.secret.as_bytes())
            .map_err(|e| invalid(format!("the secret is not base64: {e}")))?;
        if secret.is_empty() {
            return Err(invalid("the secret is empty".into()));
        }
        let mut name =
            Name::from_ascii(&name).map_err(|e| invalid(format!("key name '{name}': {e}")))?;
        name.set_fqdn(true);
        let hickory_algorithm = match algorithm {
            KeyAlgorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            KeyAlgorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            KeyAlgorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        let signer = TSigner::new(secret, hickory_algorithm, name.clone(), FUDGE_SECS)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Key {
            name,
            algorithm,
            signer,
        })
    }
}

/// What a key file says.
#[derive(Debug, PartialEq)]
struct KeyText {
    name: Option<String>,
    algorithm: Option<String>,
    secret: String,
}

/// Reads a `key "name" { algorithm A; secret "S"; };` clause, or a bare base64 secret.
fn parse_key_text(text: &str) -> Result<KeyText, String> {
    let body: String = text
        .lines()
        .map(|l| l.split(['#']).next().unwrap_or("").trim())
        .filter(|l| !l.starts_with("//"))
        .collect::<Vec<_>>()
        .join(" ");
    let body = body.trim();
    if !body.contains('{') {
        if body.is_empty() || body.contains(char::is_whitespace) {
            return Err("expected a key clause (as tsig-keygen writes) or a base64 secret".into());
        }
        return Ok(KeyText {
            name: None,
            algorithm: None,
            secret: body.to_string(),
        });
    }
    let (head, rest) = body.split_once('{').unwrap_or((body, ""));
    let name = head
        .trim()
        .strip_prefix("key")
        .map(|n| n.trim().trim_matches('"').to_string())
        .filter(|n| !n.is_empty())
        .ok_or("a key clause starts with: key \"NAME\" {")?;
    let mut algorithm = None;
    let mut secret = None;
    for statement in rest.split(';') {
        let statement = statement.trim().trim_start_matches('}').trim();
        let mut words = statement.splitn(2, char::is_whitespace);
        let (Some(keyword), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match keyword {
            "algorithm" => algorithm = Some(value),
            "secret" => secret = Some(value),
            _ => {}
        }
    }
    Ok(KeyText {
        name: Some(name),
        algorithm,
        secret: secret.ok_or("the key clause has no secret")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_tsig_keygen_writes() {
        let text = "key \"dc1-virtdns\" {\n\talgorithm hmac-sha512;\n\tsecret \"c2VjcmV0\";\n};\n";
        assert_eq!(
            parse_key_text(text).unwrap(),
            KeyText {
                name: Some("dc1-virtdns".into()),
                algorithm: Some("hmac-sha512".into()),
                secret: "c2VjcmV0".into(),
            }
        );
    }

    #[test]
    fn reads_a_bare_secret_and_rejects_prose() {
        assert_eq!(parse_key_text("c2VjcmV0\n").unwrap().secret, "c2VjcmV0");
        assert!(parse_key_text("this is not a key").is_err());
        assert!(parse_key_text("key \"k\" { algorithm hmac-sha256; };").is_err());
    }

    fn config(dir: &Path, mode: u32, text: &str) -> PublishConfig {
        let key_file = dir.join(format!("key-{mode:o}"));
        std::fs::write(&key_file, text).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)).unwrap();
        PublishConfig {
            servers: vec!["127.0.0.1".parse().unwrap()],
            zone: None,
            reverse_zones: vec![],
            ttl_secs: 300,
            key_file,
            key_name: None,
            key_algorithm: None,
        }
    }

    #[test]
    fn a_world_readable_file_is_refused_a_private_one_loads() {
        let dir = std::env::temp_dir().join(format!("virtdns-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = "key \"k1\" { algorithm hmac-sha256; secret \"c2VjcmV0\"; };";
        let err = Key::load(&config(&dir, 0o644, text)).unwrap_err();
        assert!(
            matches!(err, KeyError::WorldReadable { mode: 0o644, .. }),
            "{err}"
        );
        let key = Key::load(&config(&dir, 0o640, text)).unwrap();
        assert_eq!(key.name.to_ascii(), "k1.");
        assert_eq!(key.algorithm, KeyAlgorithm::HmacSha256);
        let bare = Key::load(&config(&dir, 0o600, "c2VjcmV0"));
        assert!(bare.unwrap_err().to_string().contains("key_name"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
