//! The `[publish]` section: where guests' names are published in an organisation's DNS
//! (RFC 2136 dynamic updates signed with TSIG): the primary servers, the forward and reverse
//! zones, the TTL, and the key. The key's secret is read from its file when the publisher
//! starts (`publish::key`), not here: the file may hold the key's name and algorithm too.

use crate::types::{DomainName, ServerAddr};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// The zone's primary servers, asked in this order until one answers.
    #[serde(rename = "server", deserialize_with = "super::one_or_many")]
    pub(crate) servers: Vec<ServerAddr>,
    /// The zone guests' names go into; default: the DHCP domain (`[dhcp] domain`, else
    /// `[dns] domain`).
    pub(crate) zone: Option<DomainName>,
    /// Reverse zones PTR records go into; an address in none of them gets no PTR.
    #[serde(default)]
    pub(crate) reverse_zones: Vec<DomainName>,
    /// TTL of the published records.
    #[serde(default = "default_ttl")]
    pub(crate) ttl_secs: u32,
    /// The TSIG key: a file that is not world-readable, holding either a key clause as
    /// `tsig-keygen` writes it (name, algorithm and secret) or the base64 secret alone.
    pub(crate) key_file: PathBuf,
    /// The key's name; default: the name in `key_file`.
    pub(crate) key_name: Option<DomainName>,
    /// hmac-sha256 (default), hmac-sha384 or hmac-sha512; default: the file's.
    pub(crate) key_algorithm: Option<KeyAlgorithm>,
}

fn default_ttl() -> u32 {
    300
}

/// The TSIG algorithms virtdns signs with (RFC 8945 6: HMAC-SHA256 is mandatory to
/// implement; SHA-1 and MD5 are not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) enum KeyAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TryFrom<String> for KeyAlgorithm {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Ok(KeyAlgorithm::HmacSha256),
            "hmac-sha384" => Ok(KeyAlgorithm::HmacSha384),
            "hmac-sha512" => Ok(KeyAlgorithm::HmacSha512),
            other => Err(format!(
                "TSIG algorithm '{other}' is not supported (hmac-sha256, hmac-sha384, hmac-sha512)"
            )),
        }
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::HmacSha256 => "hmac-sha256",
            KeyAlgorithm::HmacSha384 => "hmac-sha384",
            KeyAlgorithm::HmacSha512 => "hmac-sha512",
        })
    }
}
