//! Ports and their sockets as the machine sees them: who holds a UDP port, read from /proc
//! (the socket's inode in /proc/net/udp and /proc/net/udp6, and the process whose
//! descriptors include it) — what an "address in use" error names, so a person knows which
//! other server to stop; and a receive buffer large enough for bursts, beyond
//! net.core.rmem_max when privileged. Written by hand: two /proc reads and one setsockopt,
//! which no crate we use offers.

/// Who holds UDP `port` on this machine, as `name (pid N)` entries, read from /proc: the
/// socket's inode in /proc/net/udp, and the process whose descriptors include it.
pub(crate) fn holders(port: u16) -> Vec<String> {
    let table: String = ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    let wanted = format!(":{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(1)?.ends_with(&wanted)).then(|| cols.get(9).map(|s| s.to_string()))?
        })
        .collect();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let t = target.to_string_lossy();
                inodes.iter().any(|i| t == format!("socket:[{i}]"))
            })
        });
        if holds {
            let name = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            found.push(format!("{} (pid {pid})", name.trim()));
        }
    }
    found
}

/// `holders(port)` as one phrase for an error message.
pub(crate) fn holder_text(port: u16) -> String {
    let holders = holders(port);
    if holders.is_empty() {
        "a process not visible from here".to_string()
    } else {
        holders.join(", ")
    }
}

/// Asks for a `bytes` receive buffer on `socket`: SO_RCVBUFFORCE when privileged (not capped
/// by net.core.rmem_max), else SO_RCVBUF (capped). Returns what the kernel granted.
pub(crate) fn set_receive_buffer(socket: &socket2::Socket, bytes: usize) -> std::io::Result<usize> {
    use std::os::fd::AsFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    if crate::sys::set_recv_buffer_force(socket.as_fd(), value).is_err() {
        socket.set_recv_buffer_size(bytes)?;
    }
    socket.recv_buffer_size()
}
