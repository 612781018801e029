//! The commands a person runs: `check` on good and bad configs, `explain` on a split layout,
//! and a resolv.conf that would make virtdns forward to itself.

use crate::lab::{Lab, run};
use crate::peers::virtdns_bin;
use std::process::Command;

pub fn check_and_explain(lab: &mut Lab) {
    let (internal, outside, rc) = super::seed_layout(lab);

    // A bad config names file, line and problem, and nothing starts.
    let bad = lab.write(
        "bad.toml",
        "[dns]\ndomain = \"vm.test\"\nlisten = [\"192.168.122.1:99999\"]\n",
    );
    for command in ["check", "run"] {
        let out = Command::new(virtdns_bin())
            .arg(command)
            .arg("--config")
            .arg(&bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command} must refuse a bad config");
        assert!(
            stderr.contains(&format!(
                "{}:3: '192.168.122.1:99999' is not an address",
                bad.display()
            )),
            "{command}: {stderr}"
        );
    }

    // check prints the routing, with the discovered split domain.
    let good = lab.write(
        "good.toml",
        "[dns]\ndomain = \"vm.test\"\n[[dns.forwarder]]\ndomain = \"lab.example\"\naddr = \"127.0.0.99\"\n",
    );
    let out = run(Command::new(virtdns_bin())
        .arg("check")
        .arg("--config")
        .arg(&good)
        .arg("--resolv-conf")
        .arg(&rc));
    for want in [
        "local-only domains (never forwarded): vm.test",
        "lab.example -> 127.0.0.99:53 [config forwarder]",
        &format!("corp.example -> {internal} [discovered split domain]"),
        // The host's order, never rearranged.
        &format!("  {internal}\n  {outside}\n"),
        // What each server is, with the probe that showed it.
        &format!("{internal}: up"),
        "refuses names outside its zones (probe . NS -> REFUSED",
        "zones: corp.example",
    ] {
        assert!(out.contains(want), "check output lacks {want:?}:\n{out}");
    }

    // explain shows each server asked, what it said, and the final answer.
    let out = run(Command::new(virtdns_bin())
        .args(["explain", "nx.example.net", "A"])
        .arg("--resolv-conf")
        .arg(&rc));
    assert!(out.contains(&format!("asked {outside}")), "{out}");
    assert!(out.contains("REFUSED"), "{out}");
    let out = run(Command::new(virtdns_bin())
        .args(["explain", "www.example.com"])
        .arg("--resolv-conf")
        .arg(&rc));
    assert!(
        out.contains("final answer: No Error") || out.contains("final answer: NOERROR"),
        "{out}"
    );
    assert!(out.contains("192.0.2.80"), "{out}");
    println!(
        "{}",
        out.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );

    // The systemd-resolved stub is forwarded to, and check says so.
    let stub = lab.write(
        "stub.resolv.conf",
        "nameserver 127.0.0.53\noptions edns0 trust-ad\n",
    );
    let out = run(Command::new(virtdns_bin())
        .arg("check")
        .arg("--resolv-conf")
        .arg(&stub));
    assert!(
        out.contains("127.0.0.53:53 (systemd-resolved stub)"),
        "{out}"
    );
    assert!(out.contains("forwarding to it"), "{out}");

    // resolv.conf naming virtdns's own address: refused, with a clear message.
    let own = lab.addr(1);
    let looped = lab.resolv_conf("loop.resolv.conf", &[own], "");
    let out = Command::new(virtdns_bin())
        .arg("check")
        .arg("--listen")
        .arg(own.to_string())
        .arg("--resolv-conf")
        .arg(&looped)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("refusing to forward to virtdns's own listen address"),
        "{text}"
    );
    assert!(
        text.contains("(none: names outside local data get SERVFAIL)"),
        "{text}"
    );
}
