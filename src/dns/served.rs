//! How one client query was served, as values: the transport it came in on and where its
//! answer came from. The listeners and the resolver say it; the metrics (`crate::metrics`)
//! count it and the query log (`dns::querylog`) prints it.

/// The transport a query came in on: it decides how large a reply may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: a reply is bounded by the client's payload size.
    Udp,
    /// TCP: a reply may take up to 65535 bytes.
    Tcp,
}

impl Transport {
    pub(crate) const ALL: [Transport; 2] = [Transport::Udp, Transport::Tcp];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }

    /// Its place in `ALL`.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Where the answer to a client query came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The answer cache.
    Cache,
    /// Local data (hosts files, static records, guests' names, the network's own domain), or
    /// NXDOMAIN for a single-label name that is never forwarded.
    Local,
    /// An upstream server, or SERVFAIL when none answered (or too many queries were in
    /// flight).
    Forwarded,
    /// A client outside the networks answered: REFUSED.
    Refused,
    /// A query answered with an error before its name was looked at (FORMERR, NOTIMP,
    /// BADVERS).
    Invalid,
}

impl Source {
    pub(crate) const ALL: [Source; 5] = [
        Source::Cache,
        Source::Local,
        Source::Forwarded,
        Source::Refused,
        Source::Invalid,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Local => "local",
            Source::Forwarded => "forwarded",
            Source::Refused => "refused",
            Source::Invalid => "invalid",
        }
    }

    /// Its place in `ALL`.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_places_in_all() {
        for (i, t) in Transport::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
        }
        for (i, s) in Source::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }
}
