//! `virtdns-docs OUT_DIR`: renders the command line (`virtdns::cli`) as the man page
//! virtdns(8) and as bash and zsh completions, for the Debian package (`scripts/package`).
//! virtdns.toml(5) is written by hand (`dist/man/virtdns.toml.5`); the tests below check that
//! it names every key the configuration accepts, and that the shipped example loads.

#![forbid(unsafe_code)]

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use std::io::Write;
use std::path::PathBuf;
use virtdns::cli::{Cli, VERSION};

/// Sections of virtdns(8) that the command line cannot say: how it runs as a service.
const SERVICE_SECTIONS: &str = r#".SH SIGNALS
.TP
.B SIGHUP
Re\-read the configuration file (and the libvirt network's definition) and apply what changed:
leases are kept, and the cache too when routes and local names are unchanged. A configuration
that does not load is logged, and the running one stays. In \fB[dns]\fR, \fBlisten\fR,
\fBcache_size\fR, \fBmax_inflight\fR, \fBthreads\fR and the TCP limits, and the
\fB[publish]\fR and \fB[metrics]\fR sections are set up at start only: a reload that changes
them logs a warning naming them.
.TP
.BR SIGTERM ", " SIGINT
Stop: running work gets 2 seconds to finish.
.SH SYSTEMD
The unit
.B virtdns@NET.service
runs
.B virtdns run \-\-config /etc/virtdns/NET.toml
as the system user
.BR virtdns ,
with only the capabilities CAP_NET_BIND_SERVICE (ports 53 and 67) and CAP_NET_ADMIN (the ARP
entry that delivers a DHCP reply to a client without an address, and a large receive buffer),
in a read\-only view of the system; leases live in
.IR /var/lib/virtdns .
It is
.BR Type=notify :
virtdns sends READY=1 once it serves DNS, STATUS= lines as DHCP binds or waits for its
interface, and STOPPING=1 when it stops.
.B systemctl reload
sends SIGHUP. Before each start and reload, as root,
.I /usr/libexec/virtdns/libvirt-access
lets the virtdns user read libvirt's network definitions and write its lease status files
(POSIX ACLs).
.PP
libvirt's network hook
.I /etc/libvirt/hooks/network.d/virtdns
starts, stops and reloads
.B virtdns@NET.service
with each network NET that has a configuration file
.IR /etc/virtdns/NET.toml .
.SH FILES
.TP
.I /etc/virtdns/NET.toml
The configuration of the instance serving libvirt network NET; see
.BR virtdns.toml (5).
.TP
.I /etc/virtdns/default.toml.example
An example for libvirt's default network.
.TP
.I /var/lib/virtdns/BRIDGE.leases.sqlite
The DHCP lease database (SQLite), unless the configuration names another.
.TP
.I /var/lib/libvirt/dnsmasq/BRIDGE.status
libvirt's lease status file: written when virtdns serves DHCP on a libvirt network, read for
the guests' names when libvirt's dnsmasq does.
.TP
.I /etc/resolv.conf
The host's resolver configuration, followed as it changes.
.SH ENVIRONMENT
.TP
.B VIRTDNS_LOG
What is logged to standard error: error, warn, info (the default), debug or trace, or a
tracing filter such as virtdns::dhcp=debug.
.TP
.B NOTIFY_SOCKET
Set by systemd: where readiness and status are sent.
.SH "EXIT STATUS"
0 when stopped by a signal or when a command succeeded; non\-zero when the configuration does
not load, a socket cannot be bound, or a part of a running virtdns stopped on its own (for its
supervisor to restart it).
.SH "SEE ALSO"
.BR virtdns.toml (5),
.BR systemctl (1),
.BR virsh (1),
.BR resolv.conf (5)
"#;

fn main() -> std::io::Result<()> {
    let out = std::env::args_os().nth(1).map(PathBuf::from);
    // A flag is not a folder: `virtdns-docs --help` must not write into ./--help.
    let Some(out) = out.filter(|o| !o.to_string_lossy().starts_with('-')) else {
        eprintln!("usage: virtdns-docs OUT_DIR  (writes man/virtdns.8 and completions/)");
        std::process::exit(2);
    };
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    std::fs::write(man.join("virtdns.8"), man_page()?)?;
    let mut cmd = Cli::command();
    for (shell, file) in [(Shell::Bash, "virtdns"), (Shell::Zsh, "_virtdns")] {
        let mut f = std::fs::File::create(completions.join(file))?;
        clap_complete::generate(shell, &mut cmd, "virtdns", &mut f);
        f.flush()?;
    }
    Ok(())
}

/// virtdns(8): clap_mangen's name, synopsis and description of the whole command, then each
/// command with its own synopsis, description and options (so that one page has them all),
/// then what the command line cannot say.
fn man_page() -> std::io::Result<Vec<u8>> {
    let mut cmd = Cli::command();
    cmd.build();
    let top = Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .source(format!("virtdns {VERSION}"));
    let mut page = Vec::new();
    top.render_title(&mut page)?;
    top.render_name_section(&mut page)?;
    top.render_synopsis_section(&mut page)?;
    top.render_description_section(&mut page)?;
    writeln!(page, ".SH COMMANDS")?;
    for sub in commands(&cmd) {
        let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_string();
        let man = Man::new(sub.clone());
        writeln!(page, ".SS \"{}\"", name.replace('-', "\\-"))?;
        page.extend(body(|w| man.render_synopsis_section(w))?);
        writeln!(page, ".PP")?;
        page.extend(body(|w| man.render_description_section(w))?);
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            writeln!(page, ".PP\nOptions:")?;
            page.extend(body(|w| man.render_options_section(w))?);
        }
    }
    page.extend(SERVICE_SECTIONS.as_bytes());
    top.render_version_section(&mut page)?;
    // Each rendering starts with the same preamble (the `Aq` string): keep the first.
    let text = String::from_utf8_lossy(&page).into_owned();
    let mut seen = std::collections::HashSet::new();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !is_preamble(l) || seen.insert(l.to_string()))
        .collect();
    Ok(format!("{}\n", lines.join("\n")).into_bytes())
}

/// A line of the preamble clap_mangen's roff output starts with.
fn is_preamble(line: &str) -> bool {
    line.starts_with(".ie \\n(.g") || line.starts_with(".el .ds Aq")
}

/// The commands that do something, depth first (`libvirt import`, not `libvirt`), without
/// clap's own `help`.
fn commands(cmd: &clap::Command) -> Vec<clap::Command> {
    let mut all = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        if sub.has_subcommands() {
            all.extend(commands(sub));
        } else {
            all.push(sub.clone());
        }
    }
    all
}

/// A section as clap_mangen renders it, without its `.SH` heading and without the preamble
/// (the `Aq` string) that the page's title already defined.
fn body(render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    render(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(".SH") && !is_preamble(l))
        .collect();
    Ok(format!("{}\n", kept.join("\n")).into_bytes())
}

/// The source tree this binary was built from.
#[cfg(test)]
fn source(path: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every key of the configuration file, read from the structs that deserialize it in
/// `src/config.rs` and `src/config/*.rs`: the fields of each `#[derive(Deserialize)]`
/// struct (by their serde name), less `#[serde(skip)]` ones and those of structs that
/// deserialize through another (`try_from`), whose fields are that other's.
#[cfg(test)]
fn config_keys(files: &[PathBuf]) -> Vec<String> {
    let mut keys = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mut lines = text.lines().map(str::trim);
        while let Some(line) = lines.next() {
            if !(line.starts_with("#[derive(") && line.contains("Deserialize")) {
                continue;
            }
            let mut via_other = false;
            let mut header = lines.next().unwrap_or_default();
            while header.starts_with("#[") || header.starts_with("///") {
                via_other |= header.contains("try_from") || header.contains("untagged");
                header = lines.next().unwrap_or_default();
            }
            if !header.contains("struct ") || !header.ends_with('{') {
                continue;
            }
            let (mut rename, mut skip) = (None, false);
            for field in lines.by_ref() {
                if field == "}" {
                    break;
                }
                if let Some(attr) = field.strip_prefix("#[serde(") {
                    skip |= attr.starts_with("skip");
                    if let Some(r) = attr.split("rename = \"").nth(1) {
                        rename = r.split('"').next().map(str::to_string);
                    }
                    continue;
                }
                let field = ["pub ", "pub(crate) "]
                    .iter()
                    .find_map(|p| field.strip_prefix(p))
                    .unwrap_or(field);
                let Some((name, _)) = field.split_once(':') else {
                    continue;
                };
                let name = name.trim();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    continue;
                }
                if !via_other && !skip {
                    keys.push(rename.take().unwrap_or_else(|| name.to_string()));
                }
                (rename, skip) = (None, false);
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_sources() -> Vec<PathBuf> {
        let mut files = vec![source("src/config.rs")];
        let mut more: Vec<PathBuf> = std::fs::read_dir(source("src/config"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
            .collect();
        more.sort();
        files.extend(more);
        files
    }

    #[test]
    fn key_scanner_finds_the_known_keys() {
        let keys = config_keys(&config_sources());
        for key in [
            "dns",
            "dhcp",
            "libvirt",
            "listen",
            "forwarder",
            "record",
            "type",
            "lease_db",
            "range",
            "host",
            "status_dir",
            "mac",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} not found in {keys:?}");
        }
        for not_a_key in ["ranges", "rtype", "data", "addrs", "write_status"] {
            assert!(
                !keys.iter().any(|k| k == not_a_key),
                "{not_a_key} in {keys:?}"
            );
        }
    }

    /// virtdns.toml(5) documents every key: as `\fBkey\fR`, or as a table heading.
    #[test]
    fn config_man_page_names_every_key() {
        let page = std::fs::read_to_string(source("dist/man/virtdns.toml.5")).unwrap();
        let missing: Vec<String> = config_keys(&config_sources())
            .into_iter()
            .filter(|k| {
                !page.contains(&format!("\\fB{k}\\fR"))
                    && !page.contains(&format!("[{k}]"))
                    && !page.contains(&format!(".{k}]"))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "dist/man/virtdns.toml.5 does not document {missing:?}"
        );
    }

    #[test]
    fn shipped_example_loads() {
        let path = source("dist/virtdns.toml.example");
        let text = std::fs::read_to_string(&path).unwrap();
        virtdns::config::Config::parse(&text, &path).unwrap();
    }

    #[test]
    fn man_page_has_every_command_and_option() {
        let page = String::from_utf8(man_page().unwrap()).unwrap();
        for text in [
            "virtdns run",
            "virtdns libvirt import",
            "virtdns explain",
            "\\-\\-resolv\\-conf",
            "\\-\\-json",
            "SIGHUP",
            VERSION,
        ] {
            assert!(page.contains(text), "{text} missing from virtdns(8)");
        }
    }
}
