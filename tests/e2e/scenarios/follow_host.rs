//! The host's network changes: resolv.conf (a symlink, replaced by rename) gets new servers.

use crate::clients::dig;
use crate::lab::{Lab, wait_until};
use std::os::unix::fs::symlink;
use std::time::Duration;

pub fn resolv_conf_replaced(lab: &mut Lab) {
    let first = lab.nsd_outside(2); // www.example.com is 192.0.2.80 here
    let second = lab.nsd_outside_variant(3); // and 192.0.2.81 here
    let target = lab.resolv_conf("run/resolv.conf", &[first], "");
    let link = lab.path("etc-resolv.conf");
    symlink(&target, &link).unwrap();
    let virtdns = lab.virtdns(1, &link, "");
    let www = || dig(virtdns).query("www.example.com", "A").answers;
    assert_eq!(www(), vec!["A 192.0.2.80"]);

    // NetworkManager style: a new file renamed over the symlink's target.
    let new = lab.resolv_conf("run/resolv.conf.tmp", &[second], "");
    std::fs::rename(&new, &target).unwrap();
    let took = wait_until(
        Duration::from_secs(1),
        "new server used after rename",
        || www() == ["A 192.0.2.81"],
    );
    println!("    rename over target: new server used after {took:?}");

    // systemd style: the symlink itself replaced, pointing at another file.
    let other = lab.resolv_conf("run2/resolv.conf", &[first], "");
    let tmp_link = lab.path("etc-resolv.conf.tmp");
    symlink(&other, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &link).unwrap();
    let took = wait_until(
        Duration::from_secs(1),
        "new server used after relink",
        || www() == ["A 192.0.2.80"],
    );
    println!("    symlink retargeted: new server used after {took:?}");

    // The file vanishes: the last good list stays in use.
    std::fs::remove_file(&other).unwrap();
    wait_until(
        Duration::from_secs(2),
        "virtdns notices the missing file",
        || {
            lab.proc("virtdns-1")
                .log_text()
                .contains("keeping the last good server list")
        },
    );
    assert_eq!(
        dig(virtdns).query("n7.example.com", "A").answers,
        vec!["A 192.0.2.8"]
    );
    // An empty file likewise.
    std::fs::write(&other, "# nothing here\n").unwrap();
    wait_until(
        Duration::from_secs(2),
        "virtdns notices the empty file",
        || {
            lab.proc("virtdns-1")
                .log_text()
                .contains("lists no usable nameserver")
        },
    );
    assert_eq!(
        dig(virtdns).query("n8.example.com", "A").answers,
        vec!["A 192.0.2.9"]
    );
}
