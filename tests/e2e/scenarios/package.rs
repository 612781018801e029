//! virtdns run as the Debian package's unit (`dist/systemd/virtdns@.service`) runs it: as an
//! unprivileged user with only the unit's capabilities (read from the unit file), through
//! setpriv. DNS on port 53 and DHCP with unicast delivery to a client without an address (the
//! ARP entry virtdns sets) work, and systemd's notify socket hears READY=1 and STOPPING=1.
//! The same run without CAP_NET_ADMIN shows what that capability is for: the ARP entry
//! cannot be set and replies are broadcast instead. And the unit's `libvirt-access` helper
//! gives that user what a [libvirt] configuration needs of libvirt's root-only files.

use crate::clients::dig;
use crate::guests::{Client, Network};
use crate::lab::{Lab, Proc, run, wait_for_tcp, wait_until};
use crate::peers::virtdns_bin;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The unit whose privileges are reproduced.
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/systemd/virtdns@.service");

/// Stands in for the system user virtdns, which may not exist on the test machine: a user and
/// group of its own, with no other group (what `adduser --system --group` makes).
const SERVICE_ID: u32 = 64053;

/// Capability numbers (linux/capability.h) of the names a unit may give.
const CAPS: &[(&str, u32)] = &[
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
];

/// The capabilities the unit's `key=` line gives, as setpriv names them (net_admin).
fn unit_caps(key: &str) -> Vec<String> {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{UNIT} has no {key}="));
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

/// The /proc/PID/status mask of `caps` (setpriv names).
fn mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| {
            let name = format!("CAP_{}", c.to_uppercase());
            let bit = CAPS
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("unknown capability {name}"))
                .1;
            1u64 << bit
        })
        .sum()
}

/// What /proc/PID/status says of a process: (line name, value) for Uid, Gid, Groups, Cap*.
fn status_of(pid: u32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The lab's copy of virtdns, config and state, readable (and the state writable) by the
/// service user: the build's own folder may not be open to it.
struct Setup {
    bin: PathBuf,
    config: PathBuf,
    state: PathBuf,
}

fn setup(lab: &Lab, net: &Network) -> Setup {
    let bin = lab.path("sbin/virtdns");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(virtdns_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = lab.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(SERVICE_ID), Some(SERVICE_ID)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    let n = net.host.octets()[2];
    let config = lab.write(
        "virtdns.toml",
        &format!(
            r#"
[dns]
listen = ["{host}", "{lo}"]
domain = "vm.test"
resolv_conf = "{rc}"

[dhcp]
interface = "{bridge}"
lease_db = "{db}"
lease_time_secs = 600

[[dhcp.range]]
start = "198.18.{n}.100"
end = "198.18.{n}.199"
"#,
            host = net.host,
            lo = lab.ip(1),
            rc = lab.path("resolv.conf").display(),
            bridge = net.bridge,
            db = state.join("leases.sqlite").display(),
        ),
    );
    Setup { bin, config, state }
}

/// Starts virtdns as the unit would, with `caps` as its ambient, inheritable and bounding
/// sets, and NOTIFY_SOCKET at `notify`.
fn start<'a>(
    lab: &'a mut Lab,
    name: &str,
    setup: &Setup,
    caps: &[String],
    notify: &std::path::Path,
) -> &'a mut Proc {
    let set = format!(
        "-all{}",
        caps.iter().map(|c| format!(",+{c}")).collect::<String>()
    );
    let id = SERVICE_ID.to_string();
    lab.spawn(
        name,
        Command::new("setpriv")
            .args(["--reuid", &id, "--regid", &id, "--clear-groups"])
            .args([
                "--inh-caps",
                &set,
                "--ambient-caps",
                &set,
                "--bounding-set",
                &set,
            ])
            .arg("--no-new-privs")
            .arg("--")
            .arg(&setup.bin)
            .arg("run")
            .arg("--config")
            .arg(&setup.config)
            .env("VIRTDNS_LOG", "debug")
            .env("NOTIFY_SOCKET", notify),
    )
}

/// A notify socket the service user may send to.
fn notify_socket(lab: &Lab, name: &str) -> (UnixDatagram, PathBuf) {
    let path = lab.path(name);
    let socket = UnixDatagram::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (socket, path)
}

/// The first message on `socket` that carries `state` (READY=1), after any others (STATUS=).
fn wait_message(socket: &UnixDatagram, state: &str) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notify message with {state}: {e}"));
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.lines().any(|l| l == state) {
            return message;
        }
    }
}

/// The neighbour entries on `bridge`, as `ip neigh` lists them.
fn neighbours(bridge: &str) -> String {
    run(Command::new("ip").args(["neigh", "show", "dev", bridge]))
}

pub fn unit_privileges(lab: &mut Lab) {
    if crate::lab::in_user_namespace() {
        crate::lab::skip("needs root: it switches to another user with setpriv");
    }
    let net = lab.network();
    let outside = lab.nsd_outside(3);
    lab.resolv_conf("resolv.conf", &[outside], "");
    let setup = setup(lab, &net);
    let ambient = unit_caps("AmbientCapabilities");
    assert_eq!(
        ambient,
        unit_caps("CapabilityBoundingSet"),
        "the unit gives what it bounds"
    );
    assert!(
        ambient.contains(&"net_bind_service".to_string())
            && ambient.contains(&"net_admin".to_string()),
        "{ambient:?}"
    );

    let (notify, notify_path) = notify_socket(lab, "notify.sock");
    let pid = start(lab, "virtdns-unit", &setup, &ambient, &notify_path).pid();
    let dns = SocketAddr::new(lab.ip(1).into(), 53);
    wait_for_tcp(dns, "virtdns as the service user");
    let ready = wait_message(&notify, "READY=1");
    assert!(ready.contains("STATUS=DNS on"), "{ready:?}");

    // It runs as the service user, with exactly the unit's capabilities.
    let status = status_of(pid);
    let field = |k: &str| {
        status
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let id = SERVICE_ID.to_string();
    assert_eq!(
        field("Uid").split_whitespace().collect::<Vec<_>>(),
        [id.as_str(); 4]
    );
    assert_eq!(field("Groups"), "");
    let want = format!("{:016x}", mask(&ambient));
    for cap in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(field(cap), want, "{cap} of virtdns");
    }

    // DNS on port 53, for the host and on the bridge.
    assert_eq!(
        dig(dns).query("www.example.com", "A").answers,
        ["A 192.0.2.80"]
    );

    // DHCP: a client without an address (udhcpc sets no broadcast flag) gets its lease by
    // unicast through the ARP entry virtdns set; it then resolves through virtdns.
    let mut guest = lab.guest(&net, 1, "alpha");
    lab.start_client(&mut guest, Client::Udhcpc, "alpha", &[]);
    let lease = guest.wait_lease();
    let n = net.host.octets()[2];
    assert_eq!(lease.ip.octets()[..3], [198, 18, n]);
    let log = lab.proc("virtdns-unit").log_text();
    assert!(
        !log.contains("cannot set ARP entry"),
        "unicast delivery fell back to broadcast:\n{log}"
    );
    let table = neighbours(&net.bridge);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("{} ", lease.ip)) && l.contains(&guest.mac)),
        "no ARP entry {} -> {} on {}: {table}",
        lease.ip,
        guest.mac,
        net.bridge
    );
    assert_eq!(guest.getent("www.example.com")[..1], ["192.0.2.80"]);
    assert_eq!(
        dig(dns).query("alpha.vm.test", "A").answers,
        [format!("A {}", lease.ip)]
    );
    let db = setup.state.join("leases.sqlite");
    assert!(db.exists(), "the lease database is in the state folder");

    // SIGTERM: STOPPING=1, and a clean exit.
    run(Command::new("kill").args(["-TERM", &pid.to_string()]));
    wait_message(&notify, "STOPPING=1");
    let exit = lab
        .proc("virtdns-unit")
        .wait_exit(Duration::from_secs(5))
        .expect("virtdns stops on SIGTERM");
    assert!(exit.success(), "{exit:?}");

    // Without CAP_NET_ADMIN the ARP entry cannot be set: the reply is broadcast instead (the
    // check above would have failed).
    let without: Vec<String> = ambient
        .iter()
        .filter(|c| *c != "net_admin")
        .cloned()
        .collect();
    let (notify, notify_path) = notify_socket(lab, "notify2.sock");
    start(lab, "virtdns-no-net-admin", &setup, &without, &notify_path);
    wait_for_tcp(dns, "virtdns without CAP_NET_ADMIN");
    wait_message(&notify, "READY=1");
    let mut bravo = lab.guest(&net, 2, "bravo");
    lab.start_client(&mut bravo, Client::Udhcpc, "bravo", &[]);
    bravo.wait_lease();
    wait_until(
        Duration::from_secs(5),
        "virtdns logs the broadcast fallback",
        || {
            lab.proc("virtdns-no-net-admin")
                .log_text()
                .contains("cannot set ARP entry; broadcasting instead")
        },
    );
}

/// The unit's `libvirt-access` helper (`dist/libvirt/libvirt-access`), on libvirt's folders as
/// libvirt leaves them (definitions root's with mode 0600, the status folder root's): before
/// it the service user can read no network definition and write no lease status file; after
/// it, both; after `--remove`, neither again.
pub fn libvirt_access_helper(lab: &mut Lab) {
    if crate::lab::in_user_namespace() {
        crate::lab::skip("needs root: it switches to another user with setpriv");
    }
    let net = lab.network();
    let setup = setup(lab, &net);
    let dirs = ["run", "etc", "status"].map(|d| {
        let p = lab.path(&format!("libvirt/{d}"));
        std::fs::create_dir_all(&p).unwrap();
        p
    });
    let xml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/libvirt-recipes/virtdns-dns-and-dhcp.xml"
    ))
    .unwrap();
    for dir in &dirs[..2] {
        let def = dir.join("default.xml");
        std::fs::write(&def, &xml).unwrap();
        std::fs::set_permissions(&def, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let id = SERVICE_ID.to_string();
    let as_service = |argv: &[&std::ffi::OsStr]| {
        Command::new("setpriv")
            .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
            .args(argv)
            .output()
            .unwrap()
    };
    let import = || {
        as_service(&[
            setup.bin.as_os_str(),
            "libvirt".as_ref(),
            "import".as_ref(),
            "default".as_ref(),
            "--run-dir".as_ref(),
            dirs[0].as_os_str(),
            "--etc-dir".as_ref(),
            dirs[1].as_os_str(),
        ])
    };
    let status_file = dirs[2].join("virbr0.status");
    let write_status = || {
        as_service(&[
            "sh".as_ref(),
            "-c".as_ref(),
            "echo [] > \"$1\"".as_ref(),
            "sh".as_ref(),
            status_file.as_os_str(),
        ])
    };
    let helper = |args: &[&str]| {
        run(Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dist/libvirt/libvirt-access"
        ))
        .args(args)
        .env("VIRTDNS_USER", &id)
        .env("LIBVIRT_RUN_DIR", &dirs[0])
        .env("LIBVIRT_ETC_DIR", &dirs[1])
        .env("LIBVIRT_STATUS_DIR", &dirs[2]))
    };

    let before = import();
    assert!(
        !before.status.success() && String::from_utf8_lossy(&before.stderr).contains("default"),
        "the service user reads a 0600 definition without the helper: {before:?}"
    );
    assert!(
        !write_status().status.success(),
        "status folder writable without the helper"
    );

    helper(&[]);
    let after = import();
    assert!(after.status.success(), "{after:?}");
    assert!(
        String::from_utf8_lossy(&after.stdout).contains("vm.test"),
        "{after:?}"
    );
    let wrote = write_status();
    assert!(wrote.status.success(), "{wrote:?}");
    assert!(status_file.exists());

    helper(&["--remove"]);
    assert!(!import().status.success(), "access stays after --remove");
    std::fs::remove_file(&status_file).unwrap();
    assert!(
        !write_status().status.success(),
        "write access stays after --remove"
    );
}
