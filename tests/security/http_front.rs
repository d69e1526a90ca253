//! The HTTP front under slow and hostile clients, over real sockets: slow
//! bodies hold no in-flight permit, operations endpoints have a bound of
//! their own, an upload without the admin token is refused before its body
//! is read, headers and bodies have time limits, and no component can take
//! the whole in-flight bound.

use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::DEFAULT_ROUTES;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN_TOKEN: &str = "admin-secret";

/// A host served on a loopback port; stopped when dropped.
struct Front {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn serve(sandbox: SandboxConfig, http: HttpLimits) -> Front {
    let dir = tempfile::tempdir().unwrap();
    let header_timeout = http.header_timeout;
    let app = support::build_in(dir.path(), None, None, sandbox, http, DEFAULT_ROUTES).await;
    let (addr, stop) = support::served::spawn(app, header_timeout).await;
    Front {
        addr,
        _stop: stop,
        _dir: dir,
    }
}

fn limits() -> HttpLimits {
    HttpLimits {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..HttpLimits::default()
    }
}

/// Sends `head` (and `body`) on a fresh connection and reads the status
/// line of the answer, or `None` if none came within `wait`.
async fn status_of(addr: SocketAddr, head: &str, body: &[u8], wait: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(body).await;
    read_status(&mut stream, wait).await
}

async fn read_status(stream: &mut TcpStream, wait: Duration) -> Option<u16> {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = Instant::now() + wait;
    while !got.windows(2).any(|w| w == b"\r\n") {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&got);
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn get_status(addr: SocketAddr, path: &str, auth: Option<&str>) -> Option<u16> {
    let auth = auth
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n");
    status_of(addr, &head, b"", Duration::from_secs(10)).await
}

/// Opens a connection that sends the head of a POST promising `length`
/// bytes, then one byte every `every`, until dropped.
async fn trickle(
    addr: SocketAddr,
    path: &str,
    length: usize,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::spawn(async move {
        for _ in 0..length {
            tokio::time::sleep(every).await;
            if stream.write_all(b" ").await.is_err() {
                return;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_slow_bodies_do_not_stop_a_normal_request() {
    let front = serve(
        SandboxConfig {
            max_in_flight: 16,
            ..SandboxConfig::default()
        },
        limits(),
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..100 {
        slow.push(
            trickle(
                front.addr,
                "/api/templates",
                1000,
                Duration::from_millis(200),
            )
            .await,
        );
    }
    // Let every slow request reach the server and start its body.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The same component the slow bodies are for, and another one.
    assert_eq!(
        get_status(front.addr, "/api/templates?limit=1", None).await,
        Some(200)
    );
    assert_eq!(
        get_status(front.addr, "/api/marketplace/categories", None).await,
        Some(200)
    );
    assert_eq!(get_status(front.addr, "/healthz", None).await, Some(200));
    assert_eq!(
        get_status(front.addr, "/admin/components", Some(ADMIN_TOKEN)).await,
        Some(200)
    );
    for s in slow {
        s.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_without_the_admin_token_is_refused_before_its_body() {
    let front = serve(SandboxConfig::default(), limits()).await;
    let head = format!(
        "PUT /admin/components/templates HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        60 << 20
    );
    // One MiB of the promised 60: the answer must come without the rest.
    let status = status_of(
        front.addr,
        &head,
        &vec![0u8; 1 << 20],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status, Some(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_its_allowance_is_408() {
    let front = serve(
        SandboxConfig::default(),
        HttpLimits {
            body_timeout: Duration::from_secs(1),
            ..limits()
        },
    )
    .await;
    let mut stream = TcpStream::connect(front.addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/templates HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        read_status(&mut stream, Duration::from_secs(10)).await,
        Some(408)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let front = serve(
        SandboxConfig::default(),
        HttpLimits {
            header_timeout: Duration::from_secs(1),
            ..limits()
        },
    )
    .await;
    let mut stream = TcpStream::connect(front.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was still open after 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_component_takes_neither_the_others_share_nor_the_operations_bound() {
    let front = serve(
        SandboxConfig {
            max_in_flight: 4,
            deadline: Duration::from_secs(10),
            ..SandboxConfig::default()
        },
        limits(),
    )
    .await;
    // The fixtures component may hold three of the four permits.
    let mut busy = Vec::new();
    for _ in 0..3 {
        let addr = front.addr;
        busy.push(tokio::spawn(async move {
            get_status(addr, "/fixture/sleep?ms=3000", None).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        get_status(front.addr, "/fixture/sleep?ms=1", None).await,
        Some(503),
        "a fourth request of the busy component was admitted"
    );
    assert_eq!(
        get_status(front.addr, "/api/marketplace/categories", None).await,
        Some(200)
    );
    assert_eq!(get_status(front.addr, "/healthz", None).await, Some(200));
    assert_eq!(get_status(front.addr, "/metrics", None).await, Some(200));
    for b in busy {
        assert_eq!(b.await.unwrap(), Some(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_looping_requests_leave_the_marketplace_answering() {
    let front = serve(
        SandboxConfig {
            max_in_flight: 4,
            deadline: Duration::from_secs(4),
            ..SandboxConfig::default()
        },
        limits(),
    )
    .await;
    let mut loops = Vec::new();
    for _ in 0..4 {
        let addr = front.addr;
        loops.push(tokio::spawn(async move {
            get_status(addr, "/fixture/loop", None).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Admitted loops stop at their deadline (504); the one past the
    // component's share is refused at once (503).
    for _ in 0..5 {
        assert_eq!(
            get_status(front.addr, "/api/marketplace/categories", None).await,
            Some(200)
        );
    }
    let mut outcomes = Vec::new();
    for l in loops {
        outcomes.push(l.await.unwrap());
    }
    outcomes.sort();
    assert_eq!(outcomes, vec![Some(503), Some(504), Some(504), Some(504)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_waiting_to_arrive_take_at_most_their_memory_budget() {
    let front = serve(
        SandboxConfig {
            max_in_flight: 2,
            ..SandboxConfig::default()
        },
        HttpLimits {
            max_body_bytes: 1000,
            ..limits()
        },
    )
    .await;
    // Two slow bodies of the largest size hold the whole budget (2 × 1000).
    let mut slow = Vec::new();
    for _ in 0..2 {
        slow.push(
            trickle(
                front.addr,
                "/api/templates",
                1000,
                Duration::from_millis(200),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let head = "POST /api/templates HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10\r\nconnection: close\r\n\r\n";
    assert_eq!(
        status_of(front.addr, head, b"{}        ", Duration::from_secs(5)).await,
        Some(503),
        "a body was read past the budget"
    );
    // A request without a body needs none of it.
    assert_eq!(
        get_status(front.addr, "/api/marketplace/categories", None).await,
        Some(200)
    );
    for s in slow {
        s.abort();
    }
}
