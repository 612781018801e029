//! The RCODE of a DNS message (RFC 1035 4.1.1, RFC 6895 2.3) as a value type, so outcomes,
//! verdicts and explanations carry a code that names itself instead of a bare number. This
//! is the 4-bit header code; the upper bits of an extended RCODE stay in the OPT record
//! (`wire::Edns::rcode_high`), which is where the walk reads them.

use std::fmt;

/// A 4-bit header RCODE.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rcode(u8);

impl Rcode {
    /// NOERROR: no error.
    pub const NOERROR: Rcode = Rcode(0);
    pub(crate) const FORMERR: Rcode = Rcode(1);
    pub(crate) const SERVFAIL: Rcode = Rcode(2);
    pub(crate) const NXDOMAIN: Rcode = Rcode(3);
    pub(crate) const NOTIMP: Rcode = Rcode(4);
    /// REFUSED: the server will not answer this client or this query.
    pub const REFUSED: Rcode = Rcode(5);

    /// The code in the low four bits of a header's fourth byte.
    pub(crate) const fn from_header(bits: u8) -> Rcode {
        Rcode(bits & 0x0f)
    }

    /// The code as a number, 0 to 15.
    pub const fn bits(self) -> u8 {
        self.0
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Rcode::NOERROR => "NOERROR",
            Rcode::FORMERR => "FORMERR",
            Rcode::SERVFAIL => "SERVFAIL",
            Rcode::NXDOMAIN => "NXDOMAIN",
            Rcode::NOTIMP => "NOTIMP",
            Rcode::REFUSED => "REFUSED",
            Rcode(6) => "YXDOMAIN",
            Rcode(7) => "YXRRSET",
            Rcode(8) => "NXRRSET",
            Rcode(9) => "NOTAUTH",
            Rcode(10) => "NOTZONE",
            _ => "RCODE?",
        }
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            "RCODE?" => write!(f, "RCODE{}", self.0),
            name => f.write_str(name),
        }
    }
}

impl fmt::Debug for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Rcode;

    #[test]
    fn names_itself_and_keeps_unknown_codes() {
        assert_eq!(Rcode::REFUSED.to_string(), "REFUSED");
        assert_eq!(Rcode::from_header(0x85).to_string(), "REFUSED");
        assert_eq!(Rcode::from_header(12).to_string(), "RCODE12");
        assert_eq!(Rcode::from_header(12).bits(), 12);
    }
}
