//! One scrape as values (`Snapshot`: the counters summed, and what was read from the parts at
//! scrape time) and its rendering in the Prometheus text format (0.0.4) with the official
//! `prometheus-client` encoder. No sockets and no clocks here: a snapshot in, text out.

use super::shard::{DHCP_KINDS, Direction, Totals};
use crate::dhcp::pool::RangeUsage;
use crate::dns::cache::CacheStats;
use crate::dns::rcode::Rcode;
use crate::dns::served::{Source, Transport};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `Content-Type` of what `render` gives.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What is known of one upstream at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UpstreamState {
    pub(crate) addr: SocketAddr,
    pub(crate) up: bool,
    /// None before its first reply.
    pub(crate) srtt: Option<Duration>,
}

/// Everything one scrape shows.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) totals: Totals,
    pub(crate) cache: CacheStats,
    /// The servers the upstream pool knows now, in address order.
    pub(crate) upstreams: Vec<UpstreamState>,
    /// Each DHCP range's addresses; empty while DHCP does not serve.
    pub(crate) dhcp_ranges: Vec<RangeUsage>,
    pub(crate) started: SystemTime,
    pub(crate) version: &'static str,
    pub(crate) query_log: bool,
    /// The name publisher's progress and each primary's last error; None without
    /// `[publish]`.
    pub(crate) publish: Option<PublishState>,
}

/// What the name publisher has done, at scrape time.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublishState {
    pub(crate) applied: u64,
    pub(crate) failed: u64,
    pub(crate) conflicts: u64,
    pub(crate) pending: usize,
    /// Each primary with its last error (None: its last answer was one).
    pub(crate) servers: Vec<(SocketAddr, Option<String>)>,
}

/// The snapshot in the Prometheus text format.
pub(crate) fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

type Labels = Vec<(&'static str, String)>;

/// Writes one metric family: its HELP and TYPE, then a sample per row (nothing at all when
/// there is no row).
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: Vec<(Labels, M)>,
) -> fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let mut descriptor = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in rows {
        metric.encode(descriptor.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, u64)>,
) -> fmt::Result {
    let rows = rows
        .into_iter()
        .map(|(labels, v)| (labels, ConstCounter::new(v)))
        .collect();
    family(encoder, name, help, MetricType::Counter, rows)
}

fn gauges<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, V)>,
) -> fmt::Result {
    let rows = rows
        .into_iter()
        .map(|(labels, v)| (labels, ConstGauge::new(v)))
        .collect();
    family(encoder, name, help, MetricType::Gauge, rows)
}

fn rcodes() -> impl Iterator<Item = Rcode> {
    (0..super::shard::RCODES as u8).map(Rcode::from_header)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let t = &self.totals;
        let none = Labels::new;
        gauges(
            &mut e,
            "virtdns_build_info",
            "The running build: its version.",
            vec![(vec![("version", self.version.to_string())], 1i64)],
        )?;
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        gauges(
            &mut e,
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch.",
            vec![(none(), started)],
        )?;
        gauges(
            &mut e,
            "virtdns_query_log_enabled",
            "1 while the query log is on ([dns] log_queries, SIGUSR1 toggles it).",
            vec![(none(), i64::from(self.query_log))],
        )?;

        // Client queries.
        let mut queries = Vec::new();
        for transport in Transport::ALL {
            for source in Source::ALL {
                for rcode in rcodes() {
                    let n = t.query(transport, source, rcode);
                    if n > 0 {
                        let labels = vec![
                            ("transport", transport.name().to_string()),
                            ("source", source.name().to_string()),
                            ("rcode", rcode.to_string()),
                        ];
                        queries.push((labels, n));
                    }
                }
            }
        }
        counters(
            &mut e,
            "virtdns_dns_queries",
            "Client queries answered, by transport, where the answer came from and its RCODE.",
            queries,
        )?;
        let dropped = Transport::ALL
            .iter()
            .map(|&tr| {
                let slot = super::shard::Slot::dropped(tr);
                (vec![("transport", tr.name().to_string())], t.get(slot))
            })
            .collect();
        counters(
            &mut e,
            "virtdns_dns_dropped",
            "Client packets given no answer (unreadable, or themselves responses).",
            dropped,
        )?;
        gauges(
            &mut e,
            "virtdns_dns_inflight_queries",
            "Client queries waiting on an upstream now.",
            vec![(none(), t.in_flight() as i64)],
        )?;

        // The cache.
        gauges(
            &mut e,
            "virtdns_cache_entries",
            "Answers in the cache.",
            vec![(none(), self.cache.entries as i64)],
        )?;
        counters(
            &mut e,
            "virtdns_cache_hits",
            "Client queries answered from the cache.",
            vec![(none(), t.answered_from(Source::Cache))],
        )?;
        counters(
            &mut e,
            "virtdns_cache_misses",
            "Client queries the cache did not answer (answered from local data or forwarded).",
            vec![(
                none(),
                t.answered_from(Source::Local) + t.answered_from(Source::Forwarded),
            )],
        )?;
        counters(
            &mut e,
            "virtdns_cache_evictions",
            "Answers dropped from the full cache to make room for another.",
            vec![(none(), self.cache.evicted)],
        )?;
        counters(
            &mut e,
            "virtdns_cache_expired",
            "Answers found outlived when asked for (dropped; a failure is kept as a miss for the backoff), each counted once.",
            vec![(none(), self.cache.expired)],
        )?;

        // Upstreams: what the walk's exchanges came to, and what is known of each now.
        let server = |a: SocketAddr| vec![("server", a.to_string())];
        let counted: Vec<_> = t.upstreams().collect();
        counters(
            &mut e,
            "virtdns_upstream_queries",
            "Exchanges with each upstream server, whatever came of them.",
            counted
                .iter()
                .map(|(a, u)| (server(*a), u.queries()))
                .collect(),
        )?;
        let mut replies = Vec::new();
        for (a, u) in &counted {
            for rcode in rcodes() {
                let n = u.replies(rcode);
                if n > 0 {
                    let mut labels = server(*a);
                    labels.push(("rcode", rcode.to_string()));
                    replies.push((labels, n));
                }
            }
        }
        counters(
            &mut e,
            "virtdns_upstream_responses",
            "Replies from each upstream server, by RCODE.",
            replies,
        )?;
        counters(
            &mut e,
            "virtdns_upstream_timeouts",
            "Exchanges with each upstream server that got no reply in time.",
            counted
                .iter()
                .map(|(a, u)| (server(*a), u.timeouts()))
                .collect(),
        )?;
        counters(
            &mut e,
            "virtdns_upstream_errors",
            "Exchanges with each upstream server that failed otherwise (ICMP error, TCP failure, \
             unusable reply).",
            counted
                .iter()
                .map(|(a, u)| (server(*a), u.errors()))
                .collect(),
        )?;
        gauges(
            &mut e,
            "virtdns_upstream_up",
            "1 while the upstream server answers, 0 while it is marked down (and probed).",
            self.upstreams
                .iter()
                .map(|u| (server(u.addr), i64::from(u.up)))
                .collect(),
        )?;
        gauges(
            &mut e,
            "virtdns_upstream_srtt_seconds",
            "Smoothed round-trip time of each upstream server (after its first reply).",
            self.upstreams
                .iter()
                .filter_map(|u| Some((server(u.addr), u.srtt?.as_secs_f64())))
                .collect(),
        )?;

        // DHCP.
        let mut leases = Vec::new();
        for u in &self.dhcp_ranges {
            let range = format!("{}-{}", u.range.start, u.range.end);
            for (state, n) in [
                ("bound", u.bound),
                ("offered", u.offered),
                ("declined", u.declined),
                ("free", u.free),
            ] {
                let labels = vec![("range", range.clone()), ("state", state.to_string())];
                leases.push((labels, n as i64));
            }
        }
        gauges(
            &mut e,
            "virtdns_dhcp_addresses",
            "Addresses of each DHCP range by state: bound (leased), offered, declined \
             (quarantined), free.",
            leases,
        )?;
        let mut messages = Vec::new();
        for direction in Direction::ALL {
            for (code, kind) in DHCP_KINDS.iter().enumerate() {
                let n = t.get(super::shard::Slot::dhcp(direction, code as u8));
                if n > 0 {
                    let labels = vec![
                        ("direction", direction.name().to_string()),
                        ("type", kind.to_string()),
                    ];
                    messages.push((labels, n));
                }
            }
        }
        counters(
            &mut e,
            "virtdns_dhcp_messages",
            "DHCP messages received and sent, by type.",
            messages,
        )?;
        if let Some(p) = &self.publish {
            let outcome = |o: &str| vec![("outcome", o.to_string())];
            counters(
                &mut e,
                "virtdns_publish_steps",
                "Steps of publishing guests' names ([publish]): applied (a name added, confirmed \
                 or removed), failed (retried), conflict (the name is someone else's).",
                vec![
                    (outcome("applied"), p.applied),
                    (outcome("failed"), p.failed),
                    (outcome("conflict"), p.conflicts),
                ],
            )?;
            gauges(
                &mut e,
                "virtdns_publish_pending",
                "Steps the last publishing round could not complete (retried with backoff).",
                vec![(none(), p.pending as i64)],
            )?;
            gauges(
                &mut e,
                "virtdns_publish_server_ok",
                "1 if the primary's last answer to an update was one, else 0 with the error.",
                p.servers
                    .iter()
                    .map(|(addr, error)| {
                        let mut labels = server(*addr);
                        labels.push(("error", error.clone().unwrap_or_default()));
                        (labels, i64::from(error.is_none()))
                    })
                    .collect(),
            )?;
        }
        let commits = t.commits();
        let mut histogram = e.encode_descriptor(
            "virtdns_dhcp_lease_commit_seconds",
            "How long each commit of the lease database took (one commit covers every change \
             queued meanwhile).",
            None,
            MetricType::Histogram,
        )?;
        histogram.encode_histogram::<NoLabelSet>(
            commits.sum_seconds,
            commits.count,
            &commits.buckets,
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Range;
    use crate::metrics::shard::{Shards, Slot, UpstreamResult};

    fn snapshot(totals: Totals) -> Snapshot {
        Snapshot {
            totals,
            cache: CacheStats {
                entries: 7,
                evicted: 3,
                expired: 2,
            },
            upstreams: vec![
                UpstreamState {
                    addr: "192.0.2.1:53".parse().unwrap(),
                    up: true,
                    srtt: Some(Duration::from_micros(1500)),
                },
                UpstreamState {
                    addr: "192.0.2.2:53".parse().unwrap(),
                    up: false,
                    srtt: None,
                },
            ],
            dhcp_ranges: vec![RangeUsage {
                range: Range {
                    start: "10.0.0.10".parse().unwrap(),
                    end: "10.0.0.19".parse().unwrap(),
                    subnet: None,
                },
                bound: 4,
                offered: 1,
                declined: 0,
                free: 5,
            }],
            started: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
            version: "1.2.3",
            query_log: true,
            publish: Some(PublishState {
                applied: 7,
                failed: 2,
                conflicts: 1,
                pending: 1,
                servers: vec![("192.0.2.53:53".parse().unwrap(), Some("timed out".into()))],
            }),
        }
    }

    #[test]
    fn counts_from_every_thread_are_rendered_with_their_labels() {
        let shards = Shards::new();
        let (a, b) = (shards.join(), shards.join());
        for _ in 0..3 {
            a.bump(Slot::query(Transport::Udp, Source::Cache, Rcode::NOERROR));
        }
        b.bump(Slot::query(Transport::Udp, Source::Cache, Rcode::NOERROR));
        b.bump(Slot::query(
            Transport::Tcp,
            Source::Forwarded,
            Rcode::NXDOMAIN,
        ));
        b.bump(Slot::query(Transport::Udp, Source::Local, Rcode::NOERROR));
        a.bump(Slot::dropped(Transport::Udp));
        a.bump(Slot::forwards_begun());
        a.bump(Slot::dhcp(Direction::Received, 1));
        a.bump(Slot::dhcp(Direction::Sent, 2));
        a.commit(Duration::from_millis(3));
        let up = b.upstream("192.0.2.1:53".parse().unwrap());
        up.bump(UpstreamResult::Reply(Rcode::NOERROR));
        up.bump(UpstreamResult::Reply(Rcode::NOERROR));
        up.bump(UpstreamResult::Timeout);
        let text = render(snapshot(shards.totals()));
        for line in [
            "virtdns_build_info{version=\"1.2.3\"} 1",
            "process_start_time_seconds 1700000000.25",
            "virtdns_query_log_enabled 1",
            "virtdns_dns_queries_total{transport=\"udp\",source=\"cache\",rcode=\"NOERROR\"} 4",
            "virtdns_dns_queries_total{transport=\"udp\",source=\"local\",rcode=\"NOERROR\"} 1",
            "virtdns_dns_queries_total{transport=\"tcp\",source=\"forwarded\",rcode=\"NXDOMAIN\"} 1",
            "virtdns_dns_dropped_total{transport=\"udp\"} 1",
            "virtdns_dns_dropped_total{transport=\"tcp\"} 0",
            "virtdns_dns_inflight_queries 1",
            "virtdns_cache_entries 7",
            "virtdns_cache_hits_total 4",
            "virtdns_cache_misses_total 2",
            "virtdns_cache_evictions_total 3",
            "virtdns_cache_expired_total 2",
            "virtdns_upstream_queries_total{server=\"192.0.2.1:53\"} 3",
            "virtdns_upstream_responses_total{server=\"192.0.2.1:53\",rcode=\"NOERROR\"} 2",
            "virtdns_upstream_timeouts_total{server=\"192.0.2.1:53\"} 1",
            "virtdns_upstream_errors_total{server=\"192.0.2.1:53\"} 0",
            "virtdns_upstream_up{server=\"192.0.2.1:53\"} 1",
            "virtdns_upstream_up{server=\"192.0.2.2:53\"} 0",
            "virtdns_upstream_srtt_seconds{server=\"192.0.2.1:53\"} 0.0015",
            "virtdns_dhcp_addresses{range=\"10.0.0.10-10.0.0.19\",state=\"bound\"} 4",
            "virtdns_dhcp_addresses{range=\"10.0.0.10-10.0.0.19\",state=\"free\"} 5",
            "virtdns_dhcp_messages_total{direction=\"received\",type=\"discover\"} 1",
            "virtdns_dhcp_messages_total{direction=\"sent\",type=\"offer\"} 1",
            "virtdns_dhcp_lease_commit_seconds_bucket{le=\"0.002\"} 0",
            "virtdns_dhcp_lease_commit_seconds_bucket{le=\"0.005\"} 1",
            "virtdns_dhcp_lease_commit_seconds_bucket{le=\"+Inf\"} 1",
            "virtdns_dhcp_lease_commit_seconds_sum 0.003",
            "virtdns_dhcp_lease_commit_seconds_count 1",
            "# TYPE virtdns_dns_queries_total counter",
            "# TYPE virtdns_upstream_up gauge",
            "# TYPE virtdns_dhcp_lease_commit_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        // Only what happened is listed: no zero series per RCODE or message type.
        assert!(!text.contains("rcode=\"SERVFAIL\""), "{text}");
        assert!(!text.contains("type=\"ack\""), "{text}");
        // No srtt for a server that never replied.
        assert!(
            !text.contains("srtt_seconds{server=\"192.0.2.2:53\"}"),
            "{text}"
        );
    }

    #[test]
    fn the_publishers_steps_and_each_primarys_state_are_rendered() {
        let text = render(snapshot(Totals::new()));
        for line in [
            "virtdns_publish_steps_total{outcome=\"applied\"} 7",
            "virtdns_publish_steps_total{outcome=\"conflict\"} 1",
            "virtdns_publish_pending 1",
            "virtdns_publish_server_ok{server=\"192.0.2.53:53\",error=\"timed out\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
    }

    #[test]
    fn every_sample_follows_the_help_and_type_of_its_family() {
        let text = render(snapshot(Totals::new()));
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{line}: no TYPE before it");
            }
        }
        // Nothing counted yet: no query series at all, but the dropped ones at zero.
        assert!(!text.contains("virtdns_dns_queries_total"), "{text}");
        assert!(text.contains("virtdns_dns_dropped_total{transport=\"tcp\"} 0"));
    }
}
