//! The front door's glue: a listener on each shard (`network.resp-port + shard index`, on the
//! member's bind host), one task per connection on the shard that accepted it, commands read
//! from the connection's buffer in place, run in order, and their replies written back in one
//! send per batch.
//!
//! Bad input gets Redis' own error: a protocol error is answered and the connection closed (as
//! Redis does); a bad command is answered and the connection keeps going. A request is bounded
//! by `network.max-frame-kib` per argument, and a connection's buffer by twice that.

use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use corecast_engine::events::{BatchClock, BATCH_CLOCK_OPS};
use corecast_engine::partition::ShardId;
use corecast_engine::spi::DistributedObject;
use corecast_engine::{Config, Invoker, ObjectHandle};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::commands::{self, Door, Flow, Session};
use super::proto::{self, Command, Limits};
use crate::map::{Map, MapService};

/// The front door could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    /// A shard could not listen on its port.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The member stopped, or the map could not be opened.
    Unavailable(String),
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::Bind { addr, reason } => write!(
                f,
                "network.resp-port: cannot listen for the Redis protocol on {addr}: {reason}"
            ),
            RespError::Unavailable(reason) => {
                write!(f, "the Redis front door did not start: {reason}")
            }
        }
    }
}

impl std::error::Error for RespError {}

/// Starts the Redis front door on every shard of the member `invoker` reaches, as `config` (the
/// member's) says: nothing when `network.resp-port` is 0. Returns the addresses it listens on,
/// in shard order.
///
/// Errors: [`RespError::Bind`] for a port in use; `Unavailable` if the member stopped.
pub async fn start(invoker: &Invoker, config: &Config) -> Result<Vec<SocketAddr>, RespError> {
    let base = config.network.resp_port;
    if base == 0 {
        return Ok(Vec::new());
    }
    let max_bulk = config.network.max_frame_bytes();
    let limits = Limits {
        max_bulk,
        ..Limits::default()
    };
    let mut addrs = Vec::new();
    for shard in 0..config.shard_count() {
        let mut addr = config.network.bind;
        addr.set_port(base + shard as u16);
        let shard_invoker = invoker.clone();
        let name = config.network.resp_map.clone();
        let started = invoker
            .run_on(ShardId(shard), move || async move {
                let listener = TcpListener::bind(addr).map_err(|e| RespError::Bind {
                    addr,
                    reason: e.to_string(),
                })?;
                let local = listener.local_addr().map_err(|e| RespError::Bind {
                    addr,
                    reason: e.to_string(),
                })?;
                let invoker = shard_invoker;
                let handle = ObjectHandle::open::<MapService>(invoker.clone(), &name)
                    .await
                    .map_err(|e| RespError::Unavailable(e.to_string()))?;
                let door = Rc::new(Door::new(
                    Map::from_handle(handle),
                    invoker,
                    limits,
                    local.port(),
                    shard,
                ));
                glommio::spawn_local(accept_loop(door, listener)).detach();
                Ok(local)
            })
            .await
            .map_err(|e| RespError::Unavailable(e.to_string()))??;
        tracing::info!(shard, addr = %started, "serving the Redis protocol");
        addrs.push(started);
    }
    Ok(addrs)
}

async fn accept_loop(door: Rc<Door>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(door.clone(), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "RESP accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Counts a connection in `clients` while it lives.
struct Counted(Rc<Door>);

impl Counted {
    fn new(door: Rc<Door>) -> Self {
        door.clients.set(door.clients.get() + 1);
        Self(door)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.clients.set(self.0.clients.get().saturating_sub(1));
    }
}

/// What woke a connection up.
enum Wake {
    Read(std::io::Result<usize>),
    Delivery(Option<commands::Delivery>),
}

/// Replies buffered past this go out before the rest of a batch runs.
const FLUSH_AT: usize = 64 * 1024;

async fn serve(door: Rc<Door>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let counted = Counted::new(door);
    let door = &counted.0;
    let mut session = Session::new(door.next_client_id());
    let max_buffer = (door.limits.max_bulk.saturating_mul(2)).max(1 << 20);
    let mut buf = vec![0u8; 16 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut out = Vec::with_capacity(16 * 1024);
    let mut cmd = Command::new();
    let watch = corecast_net::readiness::watch(std::os::fd::AsRawFd::as_raw_fd(&stream));
    loop {
        // Every whole command buffered, in order, at one reading of the clock.
        let mut batch = 0;
        let clock = BatchClock::read();
        loop {
            match proto::parse(&buf[start..end], &door.limits, &mut cmd) {
                Ok(Some(n)) => {
                    batch += 1;
                    if batch % BATCH_CLOCK_OPS == 0 {
                        clock.refresh();
                    }
                    let flow = if cmd.is_empty() {
                        Flow::Continue
                    } else {
                        let command =
                            commands::run(door, &mut session, &cmd, &buf[start..end], &mut out);
                        clock.run(command).await
                    };
                    start += n;
                    if flow == Flow::Close {
                        let _ = send(&mut stream, &mut out).await;
                        return;
                    }
                    if out.len() >= FLUSH_AT {
                        if send(&mut stream, &mut out).await.is_err() {
                            return;
                        }
                        clock.refresh();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(?peer, error = %e, "closing a RESP connection");
                    e.write_reply(&mut out);
                    let _ = send(&mut stream, &mut out).await;
                    return;
                }
            }
        }
        if batch > corecast_net::readiness::SERIAL && !out.is_empty() {
            futures_lite::future::yield_now().await;
        }
        if send(&mut stream, &mut out).await.is_err() {
            return;
        }
        // Room to read: compact, then grow up to the bound.
        if start == end {
            (start, end) = (0, 0);
        } else if start > 0 {
            buf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        if end == buf.len() {
            if buf.len() >= max_buffer {
                proto::error(&mut out, "ERR Protocol error: request too large");
                let _ = send(&mut stream, &mut out).await;
                return;
            }
            buf.resize((buf.len() * 2).min(max_buffer), 0);
        }
        let wake = if session.subscribed() {
            futures_lite::future::or(
                async { Wake::Read(stream.read(&mut buf[end..]).await) },
                async { Wake::Delivery(session.delivery().await) },
            )
            .await
        } else {
            let serial = batch <= corecast_net::readiness::SERIAL;
            match corecast_net::readiness::read(&watch, &mut buf[end..], serial, || true).await {
                Ok(Some(n)) => Wake::Read(Ok(n)),
                Ok(None) => Wake::Read(stream.read(&mut buf[end..]).await),
                Err(e) => Wake::Read(Err(e)),
            }
        };
        match wake {
            Wake::Read(Ok(0)) | Wake::Read(Err(_)) => return,
            Wake::Read(Ok(n)) => end += n,
            Wake::Delivery(Some(first)) => {
                session.write_delivery(&first, &mut out);
                while out.len() < FLUSH_AT {
                    let Some(next) = session.try_delivery() else {
                        break;
                    };
                    session.write_delivery(&next, &mut out);
                }
            }
            Wake::Delivery(None) => {}
        }
    }
}

async fn send(stream: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let result = stream.write_all(out).await;
    out.clear();
    result
}
