//! The metrics endpoint: a minimal HTTP/1.1 responder on tokio. `GET /metrics` (or `HEAD`)
//! gets a fresh scrape; any other path 404, any other method 405; one request per connection
//! (`Connection: close`), its head read within `READ_TIMEOUT` and at most `MAX_HEAD` bytes,
//! at most `MAX_CONNECTIONS` at once. That is all Prometheus needs, and all a stranger on
//! the address gets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Longest request head read.
const MAX_HEAD: usize = 8192;
/// A client must send its request head, and take the reply, within this.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;

/// What a scrape renders: the metrics text.
pub(crate) type Scrape = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds the endpoint's address; an error names it.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))
}

/// Serves scrapes on `listener` until `cancel` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    scrape: Scrape,
    cancel: CancellationToken,
) -> Result<(), String> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many connections; closed");
            continue;
        };
        let scrape = scrape.clone();
        tokio::spawn(async move {
            let served = tokio::time::timeout(READ_TIMEOUT, answer(stream, scrape)).await;
            if let Ok(Err(e)) = served {
                tracing::debug!(%peer, error = %e, "metrics: connection failed");
            }
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, scrape: Scrape) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while head_end(&head).is_none() && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let reply = respond(&head, || scrape());
    stream.write_all(&reply).await?;
    stream.shutdown().await
}

/// Where the request head ends (past its blank line), if it is whole.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// The whole response to a request whose head is `head`; `scrape` runs only for a request
/// for the metrics.
pub(crate) fn respond(head: &[u8], scrape: impl FnOnce() -> String) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut request_line = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target, version) = (
        request_line.next(),
        request_line.next(),
        request_line.next(),
    );
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return response(
            "400 Bad Request",
            "text/plain",
            "bad request\n".into(),
            true,
        );
    };
    if head_end(head).is_none() || !version.starts_with("HTTP/1.") {
        return response(
            "400 Bad Request",
            "text/plain",
            "bad request\n".into(),
            true,
        );
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return response(
            "404 Not Found",
            "text/plain",
            "not found: the metrics are at /metrics\n".into(),
            true,
        );
    }
    match method {
        "GET" => response("200 OK", super::render::CONTENT_TYPE, scrape(), true),
        "HEAD" => response("200 OK", super::render::CONTENT_TYPE, scrape(), false),
        _ => {
            let mut r = response(
                "405 Method Not Allowed",
                "text/plain",
                "method not allowed\n".into(),
                true,
            );
            // Allow: goes before the blank line ending the head.
            let at = head_end(&r).expect("a head we built") - 2;
            r.splice(at..at, b"Allow: GET, HEAD\r\n".iter().copied());
            r
        }
    }
}

fn response(status: &str, content_type: &str, body: String, with_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: Vec<u8>) -> String {
        String::from_utf8(r).unwrap()
    }

    #[test]
    fn get_metrics_is_the_scrape() {
        let r = text(respond(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
            || "a_total 1\n".into(),
        ));
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("Content-Length: 10\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\na_total 1\n"), "{r}");
        // A query string changes nothing; HEAD has the head alone.
        let r = text(respond(b"GET /metrics?x=1 HTTP/1.0\n\n", || "y\n".into()));
        assert!(r.ends_with("\r\n\r\ny\n"), "{r}");
        let r = text(respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", || {
            "abc\n".into()
        }));
        assert!(
            r.contains("Content-Length: 4\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
    }

    #[test]
    fn anything_else_is_refused_without_a_scrape() {
        let never = || -> String { panic!("no scrape for this request") };
        let r = text(respond(b"GET / HTTP/1.1\r\n\r\n", never));
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        let r = text(respond(b"POST /metrics HTTP/1.1\r\n\r\n", never));
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("\r\nAllow: GET, HEAD\r\n\r\nmethod"), "{r}");
        for bad in [
            &b""[..],
            b"GET /metrics\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            let r = text(respond(bad, never));
            assert!(
                r.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{bad:?}: {r}"
            );
        }
    }
}
