//! The process's counters and the calls the serving path makes to bump them. Each thread
//! bumps a shard of its own (`shard::Shards`), joined at its first count and left when the
//! thread ends; `totals` adds them up for a scrape. Counting is always on: a bump is a
//! thread-local access and a plain add, cheaper than a branch on whether anyone scrapes.

use super::shard::{Direction, Shard, Shards, Slot, Totals, UpstreamCounter, UpstreamResult};
use crate::dns::rcode::Rcode;
use crate::dns::served::{Source, Transport};
use crate::dns::transport::{Exchange, ExchangeError};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

static SHARDS: Shards = Shards::new();

/// The calling thread's shard, and the upstream cells it has met (kept here to bump them
/// without the shard's lock).
struct Local {
    shard: Arc<Shard>,
    upstreams: RefCell<Vec<UpstreamCounter>>,
}

impl Drop for Local {
    fn drop(&mut self) {
        SHARDS.leave(&self.shard);
    }
}

thread_local! {
    static LOCAL: Local = Local {
        shard: SHARDS.join(),
        upstreams: RefCell::new(Vec::new()),
    };
}

#[inline]
fn bump(slot: Slot) {
    // Fails only while the thread is being torn down: that count is lost, nothing else.
    let _ = LOCAL.try_with(|local| local.shard.bump(slot));
}

/// A client query answered from `source` with `rcode`.
#[inline]
pub(crate) fn answered(transport: Transport, source: Source, rcode: Rcode) {
    bump(Slot::query(transport, source, rcode));
}

/// A client packet given no answer.
pub(crate) fn dropped(transport: Transport) {
    bump(Slot::dropped(transport));
}

/// A client query waiting on an upstream, until this is dropped.
#[must_use]
pub(crate) struct Forwarding(());

/// Counts a client query as in flight until the returned guard is dropped.
pub(crate) fn forwarding() -> Forwarding {
    bump(Slot::forwards_begun());
    Forwarding(())
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        bump(Slot::forwards_done());
    }
}

/// What one exchange of the walk with `server` came to.
pub(crate) fn upstream_exchange(server: SocketAddr, result: &Result<Exchange, ExchangeError>) {
    let result = match result {
        Ok(ex) => UpstreamResult::Reply(crate::dns::wire::rcode(&ex.reply)),
        Err(e) => failure(e),
    };
    let _ = LOCAL.try_with(|local| {
        let mut upstreams = local.upstreams.borrow_mut();
        let counter = match upstreams.iter().position(|u| u.server() == server) {
            Some(i) => &upstreams[i],
            None => {
                upstreams.push(local.shard.upstream(server));
                upstreams.last().expect("just pushed")
            }
        };
        counter.bump(result);
    });
}

fn failure(e: &ExchangeError) -> UpstreamResult {
    match e {
        ExchangeError::Timeout(..) => UpstreamResult::Timeout,
        ExchangeError::Tcp(inner) => failure(inner),
        ExchangeError::Io(_) | ExchangeError::Malformed(_) => UpstreamResult::Error,
    }
}

/// A DHCP message of type `message_type` (option 53; 0 when it has none).
pub(crate) fn dhcp(direction: Direction, message_type: u8) {
    bump(Slot::dhcp(direction, message_type));
}

/// One commit of the lease store, which took `took`.
pub(crate) fn lease_commit(took: Duration) {
    let _ = LOCAL.try_with(|local| local.shard.commit(took));
}

/// Everything counted so far in this process.
pub(crate) fn totals() -> Totals {
    SHARDS.totals()
}

static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// When the process started, as the kernel says (what Prometheus's own process metrics
/// report); failing that, when this was first called.
pub(crate) fn started() -> SystemTime {
    *STARTED.get_or_init(|| process_start().unwrap_or_else(SystemTime::now))
}

/// The boot time (`/proc/stat`) plus the process's start in clock ticks after it
/// (`/proc/self/stat`, field 22).
fn process_start() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let after_name = stat.rsplit_once(')')?.1;
    let ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let hz = crate::sys::clock_ticks_per_second();
    (hz > 0).then(|| {
        std::time::UNIX_EPOCH
            + Duration::from_secs(boot)
            + Duration::from_secs_f64(ticks as f64 / hz as f64)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_started_before_now_and_not_long_ago() {
        let started = super::process_start().expect("Linux tells when a process started");
        let age = std::time::SystemTime::now()
            .duration_since(started)
            .unwrap_or_default();
        // A test binary is young; the boot time is whole seconds, so allow a little.
        assert!(age < std::time::Duration::from_secs(600), "{age:?}");
    }
}
