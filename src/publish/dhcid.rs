//! The DHCID record (RFC 4701) that marks a name as published for one DHCP client, so that
//! no other client, host or administrator's record is overwritten (RFC 4703).
//!
//! The identifier is the client's identity as the lease holds it: option 61 when the client
//! sent one, else hardware type 1 and its MAC, which is what option 61 carries for most
//! clients. Both take identifier type 0x0001 (the client identifier), so every virtdns of a
//! fleet computes the same DHCID for the same guest, and a guest that moves between hosts
//! keeps its name. Written by hand: eleven lines of RFC 4701 3.3 over `sha2`.

use sha2::{Digest, Sha256};

/// RFC 4701 3.3: identifier type "client identifier (option 61)".
const IDENTIFIER_CLIENT_ID: [u8; 2] = [0x00, 0x01];
/// RFC 4701 3.4: digest type SHA-256.
const DIGEST_SHA256: u8 = 1;

/// The DHCID RDATA for `client` holding `fqdn` (text, case-insensitive, with or without the
/// final dot).
pub(crate) fn dhcid(client: &[u8], fqdn: &str) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(client);
    hash.update(canonical_wire(fqdn));
    let mut rdata = Vec::with_capacity(3 + 32);
    rdata.extend_from_slice(&IDENTIFIER_CLIENT_ID);
    rdata.push(DIGEST_SHA256);
    rdata.extend_from_slice(&hash.finalize());
    rdata
}

/// The name in canonical wire form (RFC 4034 6.2: lower case, uncompressed).
fn canonical_wire(fqdn: &str) -> Vec<u8> {
    let mut wire = Vec::with_capacity(fqdn.len() + 2);
    for label in fqdn
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        wire.push(label.len() as u8);
        wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    wire.push(0);
    wire
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4701 3.6.2, with its identifier type and digest: client identifier
    /// 01:07:08:09:0a:0b:0c and the name chi.example.com.
    #[test]
    fn matches_rfc_4701_example() {
        let client = [0x01, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c];
        let rdata = dhcid(&client, "chi.example.com");
        assert_eq!(
            data_encoding::BASE64.encode(&rdata),
            "AAEBOSD+XR3Os/0LozeXVqcNc7FwCfQdWL3b/NaiUDlW2No="
        );
    }

    #[test]
    fn case_and_final_dot_do_not_matter_but_the_client_does() {
        let a = dhcid(&[1, 2, 3], "Web.VM.test.");
        assert_eq!(a, dhcid(&[1, 2, 3], "web.vm.test"));
        assert_ne!(a, dhcid(&[1, 2, 4], "web.vm.test"));
        assert_ne!(a, dhcid(&[1, 2, 3], "web2.vm.test"));
    }
}
