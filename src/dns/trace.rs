//! The decision trail of one query, for `virtdns explain`: which rule matched, each upstream
//! asked and what it said, why the forwarder moved on or stopped. Off on the serving path, where
//! nothing is formatted.

use std::fmt::Write;

#[derive(Debug, Default)]
pub struct Trace {
    lines: Option<Vec<String>>,
}

impl Trace {
    /// A trace that records nothing (serving path).
    pub(crate) fn off() -> Trace {
        Trace { lines: None }
    }

    pub(crate) fn on() -> Trace {
        Trace {
            lines: Some(Vec::new()),
        }
    }

    /// Records a line; `line` runs only when the trace is on.
    pub(crate) fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.lines {
            lines.push(line());
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, line) in self.lines.iter().flatten().enumerate() {
            let _ = writeln!(out, "{:>2}. {line}", i + 1);
        }
        out
    }
}
