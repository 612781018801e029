//! Hosts files (hosts(5)): address followed by canonical name and aliases.

use std::net::IpAddr;

/// One line of a hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsEntry {
    /// The address.
    pub addr: IpAddr,
    /// Lower-cased, without a trailing dot; the first is the canonical name.
    pub names: Vec<String>,
}

pub(crate) fn parse(text: &str) -> Vec<HostsEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let addr = words.next()?.split('%').next()?.parse().ok()?;
            let names: Vec<String> = words
                .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                .filter(|w| !w.is_empty())
                .collect();
            (!names.is_empty()).then_some(HostsEntry { addr, names })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_skips_junk() {
        let entries = parse(
            "127.0.0.1 localhost\n# comment\n192.0.2.5  Web.VM.test web # the web vm\n\
             not-an-ip host\n::1 ip6-localhost\n10.0.0.1\n",
        );
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].names, vec!["web.vm.test", "web"]);
        assert_eq!(entries[2].addr, "::1".parse::<IpAddr>().unwrap());
    }
}
