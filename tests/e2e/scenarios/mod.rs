//! The scenarios, each a function of a fresh `Lab`, in the order they run.

mod bad_input;
mod cache;
mod cli;
mod dhcp;
mod dnsmasq_reference;
mod failover;
mod follow_host;
mod forwarders;
mod libvirt;
mod libvirt_virtdns;
mod local_names;
mod metrics;
mod package;
mod parity;
mod publish;
mod split_dns;
mod spoofing;
mod tcp_clients;

use crate::lab::Lab;
use std::net::SocketAddr;
use std::path::PathBuf;

pub type Scenario = fn(&mut Lab);

pub const ALL: &[(&str, Scenario)] = &[
    (
        "split_dns_refused_first_matches_host_view",
        split_dns::refused_first_matches_host_view,
    ),
    (
        "split_dns_large_answers_and_tcp",
        split_dns::large_answers_and_tcp,
    ),
    (
        "dnsmasq_refused_with_cookie_vs_virtdns",
        dnsmasq_reference::refused_with_cookie,
    ),
    (
        "dnsmasq_notimp_first_vs_virtdns",
        dnsmasq_reference::notimp_first,
    ),
    (
        "dnsmasq_dead_first_vs_virtdns",
        dnsmasq_reference::dead_first,
    ),
    ("failover_servfail_first", failover::servfail_first),
    ("failover_dead_first_is_fast", failover::dead_first_is_fast),
    (
        "split_discovery_internal_nxdomain",
        failover::internal_server_answers_nxdomain,
    ),
    ("spoofing_port_per_query", spoofing::port_per_query),
    (
        "spoofing_icmp_error_fails_one_attempt",
        spoofing::icmp_error_fails_one_attempt,
    ),
    (
        "spoofing_forger_knows_port_and_id",
        spoofing::forger_knows_port_and_id,
    ),
    (
        "spoofing_real_servers_with_cookies_and_0x20",
        spoofing::real_servers_with_cookies_and_0x20,
    ),
    ("config_forwarders", forwarders::config_forwarders),
    (
        "follow_resolv_conf_replacement",
        follow_host::resolv_conf_replaced,
    ),
    (
        "cache_outlives_upstream_until_ttl",
        cache::outlives_upstream_until_ttl,
    ),
    (
        "local_names_for_guests_and_host",
        local_names::guests_and_host,
    ),
    ("bad_input_udp_and_tcp", bad_input::survives_bad_input),
    ("tcp_pipelining", bad_input::tcp_pipelining),
    (
        "tcp_slow_clients_cut_at_idle_timeout",
        tcp_clients::slow_clients_cut_at_idle_timeout,
    ),
    (
        "tcp_clients_cannot_lock_each_other_out",
        tcp_clients::cannot_lock_each_other_out,
    ),
    ("cli_check_and_explain", cli::check_and_explain),
    (
        "metrics_counts_match_queries_sent",
        metrics::counts_match_the_queries_sent,
    ),
    (
        "query_log_lines_and_sigusr1",
        metrics::query_log_lines_and_sigusr1,
    ),
    (
        "metrics_dhcp_addresses_messages_and_commits",
        metrics::dhcp_addresses_messages_and_commits,
    ),
    (
        "dhcp_three_clients_find_each_other",
        dhcp::three_clients_find_each_other,
    ),
    (
        "dhcp_renew_release_static_and_taken",
        dhcp::renew_release_static_and_taken,
    ),
    (
        "dhcp_crash_loses_no_acknowledged_lease",
        dhcp::crash_loses_no_acknowledged_lease,
    ),
    ("dhcp_bad_input_and_flood", dhcp::bad_input_and_flood),
    (
        "dhcp_renew_release_back_to_back",
        dhcp::renew_release_back_to_back,
    ),
    (
        "publish_three_hypervisors_into_bind",
        publish::three_hypervisors_into_bind,
    ),
    (
        "publish_three_hypervisors_into_knot",
        publish::three_hypervisors_into_knot,
    ),
    (
        "publish_knot_primary_and_a_wrong_key",
        publish::knot_primary_and_a_wrong_key,
    ),
    (
        "publish_refuses_a_world_readable_key",
        publish::refuses_a_world_readable_key,
    ),
    (
        "dns_answers_only_allowed_networks",
        dhcp::only_allowed_networks_are_answered,
    ),
    // The Debian package's unit: its user and capabilities are enough.
    ("package_unit_privileges", package::unit_privileges),
    (
        "package_libvirt_access_helper",
        package::libvirt_access_helper,
    ),
    // Host parity, one upstream layout each; the README table they record is checked last.
    (
        "parity_vpn_full_resolver_first",
        parity::vpn_full_resolver_first,
    ),
    (
        "parity_refused_internal_first",
        parity::refused_internal_first,
    ),
    (
        "parity_nxdomain_internal_first",
        parity::nxdomain_internal_first,
    ),
    ("parity_servfail_first", parity::servfail_first),
    ("parity_notimp_first", parity::notimp_first),
    ("parity_dead_first", parity::dead_first),
    ("parity_vpn_down_then_up", parity::vpn_down_then_up),
    ("parity_search_and_domain", parity::search_and_domain),
    (
        "parity_link_local_ipv6_scope",
        parity::link_local_ipv6_scope,
    ),
    ("parity_readme_table", parity::readme_table),
    // libvirt's own stack, the reference virtdns plugs into.
    (
        "libvirt_stock_network_leases_and_nss",
        libvirt::stock_network_leases_and_nss,
    ),
    ("libvirt_hook_is_called", libvirt::hook_is_called),
    // virtdns with libvirt: README's recipes, the network's life, the hook.
    (
        "libvirt_hook_environment",
        libvirt_virtdns::hook_environment,
    ),
    ("libvirt_hook_script", libvirt_virtdns::hook_script),
    (
        "libvirt_hook_cannot_start",
        libvirt_virtdns::hook_cannot_start,
    ),
    (
        "libvirt_recipe_virtdns_dns_and_dhcp",
        libvirt_virtdns::recipe_virtdns_dns_and_dhcp,
    ),
    (
        "libvirt_recipe_libvirt_keeps_dhcp",
        libvirt_virtdns::recipe_libvirt_keeps_dhcp,
    ),
    (
        "libvirt_recipe_dnsmasq_forwards_to_virtdns",
        libvirt_virtdns::recipe_dnsmasq_forwards_to_virtdns,
    ),
    (
        "libvirt_virtdns_before_bridge",
        libvirt_virtdns::virtdns_before_bridge,
    ),
    (
        "libvirt_refuses_second_dhcp_server",
        libvirt_virtdns::refuses_second_dhcp_server,
    ),
    (
        "libvirt_sighup_bad_config_keeps_running",
        libvirt_virtdns::sighup_bad_config_keeps_running,
    ),
];

/// The seed's upstreams: an internal BIND (REFUSED outside corp.example) at .2, NSD with the
/// outside names at .3, and the host's resolv.conf listing them in that order with
/// `search corp.example`. Returns (internal, outside, host resolv.conf).
pub fn seed_layout(lab: &mut Lab) -> (SocketAddr, SocketAddr, PathBuf) {
    let internal = lab.bind_internal(2);
    let outside = lab.nsd_outside(3);
    let host = lab.resolv_conf(
        "host.resolv.conf",
        &[internal, outside],
        "search corp.example\n",
    );
    (internal, outside, host)
}

/// The answers every split-DNS layout must give through virtdns: (name, type, status, answers).
pub const SPLIT_ANSWERS: &[Expected] = &[
    (
        "intranet.corp.example",
        "A",
        "NOERROR",
        &["A 198.51.100.10"],
    ),
    (
        "intranet.corp.example",
        "AAAA",
        "NOERROR",
        &["AAAA 2001:db8:1::10"],
    ),
    (
        "wiki.corp.example",
        "A",
        "NOERROR",
        &["CNAME intranet.corp.example.", "A 198.51.100.10"],
    ),
    ("corp.example", "MX", "NOERROR", &["MX 10 mx.corp.example."]),
    (
        "_ldap._tcp.corp.example",
        "SRV",
        "NOERROR",
        &["SRV 0 5 389 ldap.corp.example."],
    ),
    ("nx.corp.example", "A", "NXDOMAIN", &[]),
    ("www.example.com", "A", "NOERROR", &["A 192.0.2.80"]),
    ("www.example.com", "AAAA", "NOERROR", &["AAAA 2001:db8::80"]),
    (
        "alias.example.com",
        "A",
        "NOERROR",
        &[
            "CNAME alias2.example.com.",
            "CNAME www.example.com.",
            "A 192.0.2.80",
        ],
    ),
    ("example.com", "MX", "NOERROR", &["MX 10 mail.example.com."]),
    (
        "_sip._udp.example.com",
        "SRV",
        "NOERROR",
        &["SRV 10 60 5060 sip.example.com."],
    ),
    ("nx.example.com", "A", "NXDOMAIN", &[]),
];

/// A question and the answer expected for it: (name, type, status, "TYPE rdata" records).
pub type Expected<'a> = (&'a str, &'a str, &'a str, &'a [&'a str]);

/// Asks every question through `server` with dig's `edns` mode and checks each answer.
pub fn expect_answers(
    server: std::net::SocketAddr,
    edns: crate::clients::Edns,
    cases: &[Expected],
) {
    for (name, rtype, status, answers) in cases {
        let r = crate::clients::dig(server).edns(edns).query(name, rtype);
        assert_eq!(
            (r.status.as_str(), r.answers.clone()),
            (
                *status,
                answers.iter().map(|a| a.to_string()).collect::<Vec<_>>()
            ),
            "{name} {rtype} with EDNS {edns:?} through {server}"
        );
    }
}

/// Asks every SPLIT_ANSWERS question through `server`, with and without EDNS and cookies.
pub fn expect_split_answers(server: std::net::SocketAddr) {
    for edns in crate::clients::ALL_EDNS {
        expect_answers(server, edns, SPLIT_ANSWERS);
    }
}

/// Names a glibc client resolves, short ones through the search list.
pub const GLIBC_NAMES: &[&str] = &[
    "intranet.corp.example",
    "intranet",
    "wiki",
    "www.example.com",
    "alias.example.com",
    "nx.example.com",
];

/// glibc through `guest` resolves every name exactly as glibc through `host` does.
pub fn expect_same_view(host: &std::path::Path, guest: &std::path::Path, names: &[&str]) {
    for name in names {
        let on_host = crate::clients::getent(host, name);
        let on_guest = crate::clients::getent(guest, name);
        assert_eq!(
            on_guest, on_host,
            "getent ahosts {name}: guest (through virtdns) vs host"
        );
    }
}
