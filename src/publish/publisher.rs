//! The publisher: makes the zone follow what this host wants in it, one round at a time.
//!
//! A round reads the wanted entries and the `published` rows, `plan`s the steps (removals
//! first, so a renamed guest frees its old name before taking the new one), and carries
//! them out through the `Updater`, recording each in the table. Rounds run when guests'
//! names change, when a failed round's backoff ends (1 s doubling to 60 s), and every
//! `CONFLICT_RETRY` for names someone else held. The first round after a start re-adds
//! everything wanted (idempotent under RFC 4703) and removes what is no longer wanted, so
//! the zone converges to the live leases after any outage or crash.

use super::state::{self, Row, State};
use super::update::{self, Added, Entry, Updater, Zones};
use crate::config::StaticHost;
use crate::dhcp::store::StoreError;
use futures_util::StreamExt;
use rusqlite::Connection;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a name held by someone else is left alone before it is tried again.
pub(crate) const CONFLICT_RETRY: u64 = 300;
/// How long a round waits after guests' names change, so a burst is one round.
const COALESCE: Duration = Duration::from_millis(10);
/// Updates in flight at once.
const IN_FLIGHT: usize = 32;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// One thing a round does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Put the entry in the zone (or confirm it is there).
    Add(Entry),
    /// Take the entry out of the zone.
    Remove(Entry),
    /// Drop a row whose entry never reached the zone (a conflict no longer wanted).
    Forget(Entry),
}

/// The steps that bring the zone to `wanted`, given the table's `rows` and the entries
/// `confirmed` in the zone since this process started.
pub(crate) fn plan(
    wanted: &BTreeSet<Entry>,
    rows: &[Row],
    confirmed: &HashSet<Entry>,
    now: u64,
) -> Vec<Step> {
    let by_entry: HashMap<&Entry, &Row> = rows.iter().map(|r| (&r.entry, r)).collect();
    let mut steps = Vec::new();
    for row in rows.iter().filter(|r| !wanted.contains(&r.entry)) {
        steps.push(match row.state {
            State::Conflict => Step::Forget(row.entry.clone()),
            State::Adding | State::Published => Step::Remove(row.entry.clone()),
        });
    }
    for entry in wanted.iter().filter(|e| !confirmed.contains(*e)) {
        let row = by_entry.get(entry);
        let resting =
            row.is_some_and(|r| r.state == State::Conflict && now < r.since + CONFLICT_RETRY);
        if !resting {
            steps.push(Step::Add(entry.clone()));
        }
    }
    steps
}

/// Counts for metrics and the log.
#[derive(Debug, Default, Clone)]
pub(crate) struct Progress {
    pub(crate) applied: u64,
    pub(crate) failed: u64,
    pub(crate) conflicts: u64,
    /// Steps left after the last round.
    pub(crate) pending: usize,
    pub(crate) last_error: Option<String>,
}

pub struct Publisher<U> {
    pub updater: Arc<U>,
    pub zones: Zones,
    pub(crate) lease_db: PathBuf,
    pub(crate) statics: Vec<StaticHost>,
    pub(crate) progress: Arc<Mutex<Progress>>,
}

impl<U: Updater + Send + Sync + 'static> Publisher<U> {
    /// Runs rounds until `cancel`; `names` changes whenever guests' names do.
    pub(crate) async fn run(
        self,
        mut names: watch::Receiver<u64>,
        cancel: CancellationToken,
    ) -> Result<(), String> {
        let leases = crate::dhcp::store::open(&self.lease_db).map_err(|e| e.to_string())?;
        let leases = Arc::new(Mutex::new(leases));
        let table = state::open_table(&self.lease_db).map_err(|e| e.to_string())?;
        let table = Arc::new(Mutex::new(table));
        let mut confirmed = HashSet::new();
        let mut backoff = BACKOFF_MIN;
        loop {
            names.borrow_and_update();
            let failed = self.round(&leases, &table, &mut confirmed).await?;
            let wait = if failed {
                let wait = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                wait
            } else {
                backoff = BACKOFF_MIN;
                Duration::from_secs(CONFLICT_RETRY)
            };
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
                changed = names.changed() => {
                    if changed.is_err() {
                        return Err("the guest name feed ended".into());
                    }
                    // A burst of leases is one round, not one round each.
                    tokio::time::sleep(COALESCE).await;
                }
            }
        }
    }

    /// One round; true if a step failed (the round is retried after a backoff). Removals
    /// run first, then additions, each phase `IN_FLIGHT` updates at a time: the primary
    /// commits each update on its own, so one at a time would cap publishing at its
    /// journal's write rate.
    async fn round(
        &self,
        leases: &Arc<Mutex<Connection>>,
        table: &Arc<Mutex<Connection>>,
        confirmed: &mut HashSet<Entry>,
    ) -> Result<bool, String> {
        let now = crate::dhcp::server::now();
        // Reading both tables and planning is blocking work (SQLite, a hash per lease): off
        // the runtime, where DHCP's decisions run.
        let (wanted, rows) = {
            let (leases, table) = (leases.clone(), table.clone());
            let statics = self.statics.clone();
            let zone = self.zones.forward.to_ascii();
            tokio::task::spawn_blocking(move || {
                let wanted = state::wanted(&leases.lock().unwrap(), &statics, &zone, now)?;
                let rows = state::rows(&table.lock().unwrap())?;
                Ok::<_, StoreError>((wanted, rows))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
        };
        confirmed.retain(|e| wanted.contains(e));
        let steps = plan(&wanted, &rows, confirmed, now);
        let total = steps.len();
        let (removals, additions): (Vec<Step>, Vec<Step>) =
            steps.into_iter().partition(|s| !matches!(s, Step::Add(_)));
        // Entries with a row that may be in the zone: an addition needs no new row for them.
        let in_zone: HashSet<&Entry> = rows
            .iter()
            .filter(|r| r.state != State::Conflict)
            .map(|r| &r.entry)
            .collect();
        let mut failures = 0;
        for phase in [removals, additions] {
            let mut steps = Vec::with_capacity(phase.len());
            for step in &phase {
                steps.push(Box::pin(self.step(step, &in_zone, table, now)));
            }
            let outcomes: Vec<Result<Option<Entry>, String>> = futures_util::stream::iter(steps)
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
            for outcome in outcomes {
                match outcome {
                    Ok(Some(published)) => {
                        confirmed.insert(published);
                    }
                    Ok(None) => {}
                    Err(_) => failures += 1,
                }
            }
        }
        let mut progress = self.progress.lock().unwrap();
        progress.pending = failures;
        progress.applied += (total - failures) as u64;
        progress.failed += failures as u64;
        Ok(failures > 0)
    }

    /// Carries out one step and records it: Ok(Some(entry)) when the entry is confirmed in
    /// the zone, Err when the update failed (the row keeps the error).
    async fn step(
        &self,
        step: &Step,
        in_zone: &HashSet<&Entry>,
        table: &Mutex<Connection>,
        now: u64,
    ) -> Result<Option<Entry>, String> {
        let record = |f: &dyn Fn(&Connection) -> Result<(), StoreError>| {
            f(&table.lock().unwrap()).map_err(|e| e.to_string())
        };
        let failed = |entry: &Entry, e: update::UpdateError, keep_row: bool| {
            tracing::warn!(name = %entry.fqdn, addr = %entry.addr, error = %e, "publish: update failed; retried");
            let detail = e.to_string();
            self.progress.lock().unwrap().last_error = Some(detail.clone());
            if keep_row {
                let _ = record(&|c| state::set(c, entry, State::Adding, Some(&detail), now));
            }
            Err(detail)
        };
        match step {
            Step::Forget(entry) => record(&|c| state::forget(c, entry)).map(|()| None),
            Step::Remove(entry) => match update::remove(&*self.updater, &self.zones, entry).await {
                Ok(()) => {
                    tracing::info!(name = %entry.fqdn, addr = %entry.addr, "publish: removed");
                    record(&|c| state::forget(c, entry)).map(|()| None)
                }
                Err(e) => failed(entry, e, false),
            },
            Step::Add(entry) => {
                if !in_zone.contains(entry) {
                    record(&|c| state::set(c, entry, State::Adding, None, now))?;
                }
                match update::add(&*self.updater, &self.zones, entry).await {
                    Ok(Added::Published) => {
                        tracing::info!(name = %entry.fqdn, addr = %entry.addr, "publish: published");
                        record(&|c| state::set(c, entry, State::Published, None, now))?;
                        Ok(Some(entry.clone()))
                    }
                    Ok(Added::Conflict) => {
                        let why = "the name is held by another client, another host's guest, or an administrator's record (RFC 4703): left alone";
                        tracing::warn!(name = %entry.fqdn, addr = %entry.addr, "publish: conflict: {why}");
                        self.progress.lock().unwrap().conflicts += 1;
                        record(&|c| state::set(c, entry, State::Conflict, Some(why), now))
                            .map(|()| None)
                    }
                    Err(e) => failed(entry, e, true),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn entry(name: &str, last: u8) -> Entry {
        Entry {
            fqdn: format!("{name}.vm.example"),
            addr: Ipv4Addr::new(198, 18, 0, last),
            dhcid: vec![0, 1, 1, last],
        }
    }

    fn row(e: &Entry, state: State, since: u64) -> Row {
        Row {
            entry: e.clone(),
            state,
            detail: None,
            since,
        }
    }

    #[test]
    fn after_a_start_everything_wanted_is_added_again_and_the_rest_removed() {
        let (web, db, old) = (entry("web", 1), entry("db", 2), entry("old", 3));
        let wanted = BTreeSet::from([web.clone(), db.clone()]);
        let rows = [row(&web, State::Published, 0), row(&old, State::Adding, 0)];
        let steps = plan(&wanted, &rows, &HashSet::new(), 1000);
        assert_eq!(
            steps,
            [Step::Remove(old), Step::Add(db), Step::Add(web)],
            "removals first; an 'adding' row may be in the zone, so it is removed too"
        );
    }

    #[test]
    fn confirmed_entries_cost_nothing() {
        let web = entry("web", 1);
        let wanted = BTreeSet::from([web.clone()]);
        let rows = [row(&web, State::Published, 0)];
        assert!(plan(&wanted, &rows, &HashSet::from([web]), 1000).is_empty());
    }

    #[test]
    fn a_conflict_rests_then_is_tried_again_and_is_forgotten_when_not_wanted() {
        let web = entry("web", 1);
        let wanted = BTreeSet::from([web.clone()]);
        let rows = [row(&web, State::Conflict, 1000)];
        assert!(plan(&wanted, &rows, &HashSet::new(), 1000 + CONFLICT_RETRY - 1).is_empty());
        assert_eq!(
            plan(&wanted, &rows, &HashSet::new(), 1000 + CONFLICT_RETRY),
            [Step::Add(web.clone())]
        );
        assert_eq!(
            plan(&BTreeSet::new(), &rows, &HashSet::new(), 1000),
            [Step::Forget(web)]
        );
    }

    #[test]
    fn a_renamed_guest_frees_its_old_name_before_taking_the_new_one() {
        let (before, after) = (entry("web", 1), entry("www", 1));
        let rows = [row(&before, State::Published, 0)];
        let confirmed = HashSet::from([before.clone()]);
        assert_eq!(
            plan(&BTreeSet::from([after.clone()]), &rows, &confirmed, 10),
            [Step::Remove(before), Step::Add(after)]
        );
    }
}
