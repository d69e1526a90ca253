//! A TCP proxy on a free loopback port that a test can cut, partition and
//! restore, to make a real server (PostgreSQL, Redis) disappear, or go
//! silent, and come back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// What the proxy does with connections.
const UP: u8 = 0;
/// New connections are closed at once; open ones were broken.
const CUT: u8 = 1;
/// Nothing passes and nothing is closed: open and new connections stay
/// open, silent (a partition, or a middlebox dropping flows unannounced).
const PARTITIONED: u8 = 2;

pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// `UP`, `CUT` or `PARTITIONED`, for new connections.
    state: Arc<AtomicU8>,
    /// Bumped by `partition`: links forwarding since before go silent.
    partitions: watch::Sender<u64>,
    /// Tasks of open connections, aborted on `cut` and on drop.
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream`, forwarding (`up`) or refusing.
    pub async fn start(upstream: SocketAddr, up: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AtomicU8::new(if up { UP } else { CUT }));
        let (partitions, _) = watch::channel(0u64);
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let state = state.clone();
            let links = links.clone();
            let partitions = partitions.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let link = match state.load(Ordering::SeqCst) {
                        CUT => {
                            drop(client); // refused: closed at once
                            continue;
                        }
                        // Accepted, and never a byte through.
                        PARTITIONED => tokio::spawn(async move {
                            let _held = client;
                            std::future::pending::<()>().await;
                        }),
                        _ => {
                            let mut partitioned = partitions.subscribe();
                            tokio::spawn(async move {
                                let Ok(mut server) = TcpStream::connect(upstream).await else {
                                    return;
                                };
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                    _ = partitioned.changed() => {
                                        // Both ends stay open; nothing passes.
                                        let _held = (client, server);
                                        std::future::pending::<()>().await;
                                    }
                                }
                            })
                        }
                    };
                    links.lock().await.push(link);
                }
            })
        };
        Self {
            addr,
            state,
            partitions,
            links,
            accept,
        }
    }

    /// Refuses new connections and breaks every open one.
    pub async fn cut(&self) {
        self.state.store(CUT, Ordering::SeqCst);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    /// Lets nothing through without closing anything: open connections go
    /// silent, new ones are accepted and stay silent.
    pub fn partition(&self) {
        self.state.store(PARTITIONED, Ordering::SeqCst);
        self.partitions.send_modify(|n| *n += 1);
    }

    /// Forwards new connections again (connections that went silent stay
    /// so; their clients must give up on them).
    pub fn restore(&self) {
        self.state.store(UP, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut links) = self.links.try_lock() {
            for link in links.drain(..) {
                link.abort();
            }
        }
    }
}
