//! The query log a person switches on (`[dns] log_queries = true`, or SIGUSR1 at run time):
//! one info line per client query, the dnsmasq `log-queries` habit, under the target
//! `virtdns::query`:
//!
//! ```text
//! query client=192.168.122.5:40001 name=www.example.com type=A transport=udp source=forwarded upstream=192.168.1.1:53 rcode=NOERROR ms=0.8
//! ```
//!
//! Rate-limited (`LINES_PER_SECOND`, bursts of `BURST`) so it cannot flood the journal; lines
//! left out are counted and said once a second (`keep_reporting`). Off, it costs the serving
//! path one relaxed load (`start`).

use crate::dns::rcode::Rcode;
use crate::dns::served::{Source, Transport};
use crate::dns::wire;
use crate::ratelimit::TokenBucket;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Lines per second the log keeps up, once a burst is spent.
pub(crate) const LINES_PER_SECOND: u32 = 100;
/// Lines that may go out at once.
pub(crate) const BURST: u32 = 200;
/// How often lines left out are counted in the log.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(1);

static ON: AtomicBool = AtomicBool::new(false);
static LIMIT: Mutex<Option<TokenBucket>> = Mutex::new(None);

pub(crate) fn set(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

pub(crate) fn is_on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Switches the log on if it was off and off if it was on; returns whether it is on now.
pub(crate) fn toggle() -> bool {
    !ON.fetch_xor(true, Ordering::Relaxed)
}

/// When a query arrives: the time, if the log is on (then it is needed for the line), else
/// nothing but the load of the flag.
#[inline]
pub(crate) fn start() -> Option<Instant> {
    if ON.load(Ordering::Relaxed) {
        Some(Instant::now())
    } else {
        None
    }
}

/// One answered query, as its line says it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub(crate) client: Option<SocketAddr>,
    /// The query as the client sent it (its question is read again only for a line that
    /// goes out).
    pub(crate) query: &'a [u8],
    pub(crate) transport: Transport,
    pub(crate) source: Source,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) rcode: Rcode,
    pub(crate) took: Duration,
}

impl Entry<'_> {
    /// The line, without the timestamp and level the log adds.
    pub(crate) fn line(&self) -> String {
        let (name, qtype) = match wire::parse_query(self.query) {
            Ok(q) => {
                let name = q.name.to_dotted();
                let qtype = hickory_proto::rr::RecordType::from(q.qtype);
                (
                    if name.is_empty() { ".".into() } else { name },
                    qtype.to_string(),
                )
            }
            Err(_) => ("?".into(), "?".into()),
        };
        let or_dash = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_string(), |a| a.to_string());
        format!(
            "query client={} name={name} type={qtype} transport={} source={} upstream={} rcode={} ms={:.1}",
            or_dash(self.client),
            self.transport,
            self.source,
            or_dash(self.upstream),
            self.rcode,
            self.took.as_secs_f64() * 1e3,
        )
    }
}

/// Logs `entry` unless the rate limit says no.
pub(crate) fn log(entry: Entry) {
    if !allow(Instant::now()) {
        return;
    }
    tracing::info!(target: "virtdns::query", "{}", entry.line());
}

fn allow(now: Instant) -> bool {
    let mut limit = LIMIT.lock().unwrap_or_else(|e| e.into_inner());
    limit
        .get_or_insert_with(|| TokenBucket::new(LINES_PER_SECOND, BURST, now))
        .allow(now)
}

/// Says how many lines the rate limit left out since it last said so, if any.
pub(crate) fn report_suppressed() {
    let suppressed = LIMIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .map_or(0, TokenBucket::take_suppressed);
    if suppressed > 0 {
        tracing::info!(
            target: "virtdns::query",
            "query log: {suppressed} lines suppressed (at most {LINES_PER_SECOND} a second)"
        );
    }
}

/// Reports suppressed lines every `REPORT_EVERY` until `cancel` fires.
pub(crate) async fn keep_reporting(cancel: CancellationToken) -> Result<(), String> {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => report_suppressed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_everything_a_person_looks_for() {
        let name = wire::name_from_dotted("www.example.com").unwrap();
        let query = wire::build_query(&name, 28, 7);
        let entry = Entry {
            client: Some("192.0.2.5:40001".parse().unwrap()),
            query: &query,
            transport: Transport::Udp,
            source: Source::Forwarded,
            upstream: Some("198.51.100.1:53".parse().unwrap()),
            rcode: Rcode::NXDOMAIN,
            took: Duration::from_micros(1300),
        };
        assert_eq!(
            entry.line(),
            "query client=192.0.2.5:40001 name=www.example.com type=AAAA transport=udp \
             source=forwarded upstream=198.51.100.1:53 rcode=NXDOMAIN ms=1.3"
        );
        let unreadable = Entry {
            query: &[0; 5],
            upstream: None,
            client: None,
            source: Source::Invalid,
            rcode: Rcode::FORMERR,
            ..entry
        };
        assert_eq!(
            unreadable.line(),
            "query client=- name=? type=? transport=udp source=invalid upstream=- \
             rcode=FORMERR ms=1.3"
        );
    }

    #[test]
    fn toggling_flips_the_flag() {
        // The flag is the process's: this test puts it back as it found it.
        let was = is_on();
        assert_eq!(toggle(), !was);
        assert_eq!(start().is_some(), !was);
        assert_eq!(toggle(), was);
        set(was);
    }
}
