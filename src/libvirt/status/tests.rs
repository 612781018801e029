//! The status file: what is written, what is read back, and that a failed write changes
//! nothing.

use super::*;
use crate::libvirt::testutil::TempDir;

fn lease(ip: [u8; 4], last: u8, hostname: Option<&str>, expiry_time: i64) -> StatusLease {
    StatusLease {
        ip: Ipv4Addr::from(ip),
        mac: [0x52, 0x54, 0x00, 0x11, 0x22, last],
        hostname: hostname.map(str::to_owned),
        client_id: hostname.map(|_| vec![0x01, 0x52, 0x54, 0x00, 0x11, 0x22, last]),
        expiry_time,
    }
}

fn read(path: &Path) -> Vec<StatusLease> {
    match read_status(path) {
        Ok(leases) => leases,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn round_trip() {
    let dir = TempDir::new("status-round-trip");
    let path = dir.path().join("virbr0.status");
    let leases = vec![
        lease([192, 168, 122, 220], 0x33, Some("guest1"), 1_795_646_991),
        lease([192, 168, 122, 221], 0x34, None, 1_795_647_000),
    ];
    write_status(&path, &leases).expect("write");
    assert_eq!(read(&path), leases);
    write_status(&path, &[]).expect("write none");
    assert_eq!(read(&path), vec![]);
}

/// The text libvirt's leases helper writes for the same leases: its key order, optional keys
/// left out, two-space indentation.
#[test]
fn written_as_libvirt_writes_it() {
    let dir = TempDir::new("status-format");
    let path = dir.path().join("virbr0.status");
    let leases = vec![
        lease([192, 168, 122, 220], 0x33, Some("guest1"), 1_795_646_991),
        lease([192, 168, 122, 221], 0x34, None, 1_795_647_000),
    ];
    write_status(&path, &leases).expect("write");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(
        text,
        r#"[
  {
    "ip-address": "192.168.122.220",
    "mac-address": "52:54:00:11:22:33",
    "hostname": "guest1",
    "client-id": "01:52:54:00:11:22:33",
    "expiry-time": 1795646991
  },
  {
    "ip-address": "192.168.122.221",
    "mac-address": "52:54:00:11:22:34",
    "expiry-time": 1795647000
  }
]
"#
    );
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644);
}

#[test]
fn empty_file_is_no_leases() {
    let dir = TempDir::new("status-empty");
    let path = dir.path().join("virbr0.status");
    for text in ["", "\n", "[]", "[\n\n]\n"] {
        std::fs::write(&path, text).expect("write");
        assert_eq!(read(&path), vec![], "{text:?}");
    }
}

/// As libvirt's leases helper writes it under dnsmasq (`virLeaseNew`'s key order), with an
/// IPv6 lease, a lease whose guest sent no name, an infinite one (dnsmasq reports expiry 0,
/// and the helper then leaves `expiry-time` out) and entries no writer makes.
#[test]
fn reads_what_libvirts_helper_wrote() {
    let dir = TempDir::new("status-sample");
    let path = dir.path().join("virbr0.status");
    std::fs::write(
        &path,
        r#"[
  {
    "ip-address": "192.168.122.220",
    "mac-address": "52:54:00:11:22:33",
    "hostname": "guest1",
    "client-id": "01:52:54:00:11:22:33",
    "expiry-time": 1795646991
  },
  {
    "iaid": "14277333",
    "ip-address": "2001:db8:ca2:2:1::5e",
    "mac-address": "52:54:00:11:22:33",
    "hostname": "guest1",
    "client-id": "00:04:7e:7d:f0:7d:a8:bc:c5:d2:13:32:11:ed:16:ea:84:63",
    "server-duid": "00:01:00:01:2c:3e:8a:b5:52:54:00:5e:35:9c",
    "expiry-time": 1795646991
  },
  {
    "ip-address": "192.168.122.45",
    "mac-address": "52:54:00:aa:bb:cc",
    "expiry-time": 1795640000
  },
  {
    "ip-address": "192.168.122.46",
    "mac-address": "52:54:00:aa:bb:cd",
    "hostname": "forever"
  },
  {
    "ip-address": "192.168.122.47",
    "mac-address": "52:54:00:aa:bb:ce",
    "hostname": 7,
    "client-id": "not hex",
    "expiry-time": 1795640001
  },
  {"ip-address": "192.168.122.48", "expiry-time": 1795640002},
  {"ip-address": 3232266801, "mac-address": "52:54:00:aa:bb:cf", "expiry-time": 1795640003},
  {"ip-address": "192.168.122.49", "mac-address": "52:54:00:aa:bb:d0", "expiry-time": "soon"},
  "not a lease",
  null
]
"#,
    )
    .expect("write");
    let mut bare = lease([192, 168, 122, 45], 0, None, 1_795_640_000);
    bare.mac = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
    let mut malformed_optionals = lease([192, 168, 122, 47], 0, None, 1_795_640_001);
    malformed_optionals.mac = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xce];
    assert_eq!(
        read(&path),
        vec![
            lease([192, 168, 122, 220], 0x33, Some("guest1"), 1_795_646_991),
            bare,
            malformed_optionals,
        ]
    );
}

/// Readers skip expired leases themselves; the file keeps what it was given.
#[test]
fn expired_leases_are_kept_as_given() {
    let dir = TempDir::new("status-expired");
    let path = dir.path().join("virbr0.status");
    let now = 1_800_000_000;
    let leases = vec![
        lease([192, 168, 122, 10], 1, Some("old"), now - 3600),
        lease([192, 168, 122, 11], 2, Some("ending"), now),
        lease([192, 168, 122, 12], 3, Some("new"), now + 3600),
    ];
    write_status(&path, &leases).expect("write");
    let back = read(&path);
    assert_eq!(back, leases);
    let live: Vec<bool> = back.iter().map(|l| !l.is_expired(now)).collect();
    assert_eq!(
        live,
        vec![false, true, true],
        "as libvirt: expired when expiry < now"
    );
}

#[test]
fn read_errors_name_the_file() {
    let dir = TempDir::new("status-errors");
    let path = dir.path().join("virbr0.status");
    let p = path.display();

    let err = read_status(&path).expect_err("missing");
    assert!(
        err.to_string().starts_with(&format!("{p}: cannot read: ")),
        "{err}"
    );

    std::fs::write(&path, "[{\"ip-address\": ").expect("write");
    let err = read_status(&path).expect_err("truncated");
    assert!(
        err.to_string().starts_with(&format!("{p}: not JSON: ")),
        "{err}"
    );

    std::fs::write(&path, "{\"ip-address\": \"192.168.122.2\"}").expect("write");
    let err = read_status(&path).expect_err("object");
    assert_eq!(err.to_string(), format!("{p}: not a JSON array of leases"));
}

/// Files in `dir` other than `keep`: temporary files left behind.
fn leftovers(dir: &Path, keep: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != keep)
        .collect()
}

#[test]
fn replaces_the_old_file_whole() {
    let dir = TempDir::new("status-replace");
    let path = dir.path().join("virbr0.status");
    std::fs::write(
        &path,
        "old contents that are longer than the new ones will be",
    )
    .expect("write");
    std::fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    write_status(&path, &[]).expect("write");
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "[]\n");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644);
    assert_eq!(leftovers(dir.path(), "virbr0.status"), Vec::<String>::new());
}

/// A write that fails part way leaves the old file as it was, and no temporary file.
#[test]
fn failed_write_keeps_the_old_file() {
    let dir = TempDir::new("status-failed-write");
    let path = dir.path().join("virbr0.status");
    let old = vec![lease(
        [192, 168, 122, 220],
        0x33,
        Some("guest1"),
        1_795_646_991,
    )];
    write_status(&path, &old).expect("write");
    let before = std::fs::read(&path).expect("read");

    let err = replace_file(&path, 0o644, |f| {
        f.write_all(b"[\n  {\"ip-address\": ")?;
        Err(io::Error::other("disk full"))
    })
    .expect_err("the writer fails");
    assert_eq!(err.to_string(), "disk full");
    assert_eq!(std::fs::read(&path).expect("read"), before);
    assert_eq!(read(&path), old);
    assert_eq!(leftovers(dir.path(), "virbr0.status"), Vec::<String>::new());
}

/// A directory the writer may not create files in: the write fails and the old file stays.
/// Root may write there anyway, so as root this checks only that the write succeeds whole.
#[test]
fn unwritable_directory_keeps_the_old_file() {
    let dir = TempDir::new("status-read-only");
    let path = dir.path().join("virbr0.status");
    let old = vec![lease(
        [192, 168, 122, 220],
        0x33,
        Some("guest1"),
        1_795_646_991,
    )];
    write_status(&path, &old).expect("write");
    let before = std::fs::read(&path).expect("read");
    std::fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o555)).expect("chmod");
    let new = vec![lease([192, 168, 122, 221], 0x34, None, 1_795_647_000)];
    let result = write_status(&path, &new);
    std::fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    match result {
        Err(e) => {
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("{}: cannot write: ", path.display())),
                "{e}"
            );
            assert_eq!(std::fs::read(&path).expect("read"), before);
        }
        // Privileged (CAP_DAC_OVERRIDE): the directory's mode does not stop the write.
        Ok(()) => assert_eq!(read(&path), new),
    }
    assert_eq!(leftovers(dir.path(), "virbr0.status"), Vec::<String>::new());
}

#[test]
fn client_id_hex() {
    assert_eq!(hex_colon(&[0x01, 0x52, 0x0a]), "01:52:0a");
    assert_eq!(parse_hex_colon("01:52:0A"), Some(vec![0x01, 0x52, 0x0a]));
    assert_eq!(parse_hex_colon("ff"), Some(vec![0xff]));
    for bad in ["", "01::52", "012:52", "+1:52", "zz"] {
        assert_eq!(parse_hex_colon(bad), None, "{bad:?}");
    }
}
