//! Connections on a shard: the handshake, a writer task that batches frames, and outbound
//! request/response connections with correlation ids.
//!
//! Owns: [`Writer`] (frames queued by any task on the shard, written by one task: everything
//! queued while a write is in flight goes out in the next one), [`Outbound`] (a connection to a
//! remote shard: send a request, await its response), [`Notify`] and [`Slot`] (same-thread
//! wake-ups), and [`handshake`] (the first frames). All of it lives on one shard's thread:
//! `Rc`/`RefCell`, no locks.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use ahash::AHashMap;
use corecast_engine::payload::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rkyv::util::AlignedVec;

use crate::frame::{self, FrameError, FrameKind, Header, ReadBuf};
use crate::readiness;
use crate::wire::{Control, Role};

/// Why a connection or a call on it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// TCP connect, read or write failed.
    #[error("{addr}: {reason}")]
    Io {
        /// The peer.
        addr: SocketAddr,
        /// The system's reason.
        reason: String,
    },
    /// The peer refused the handshake.
    #[error("{addr} refused the connection: {reason}")]
    Refused {
        /// The peer.
        addr: SocketAddr,
        /// The peer's reason.
        reason: String,
    },
    /// The peer broke the protocol.
    #[error("{addr}: {source}")]
    Frame {
        /// The peer.
        addr: SocketAddr,
        /// What was wrong.
        #[source]
        source: FrameError,
    },
    /// The peer sent something other than what the protocol expects here.
    #[error("{addr}: protocol error: {reason}")]
    Protocol {
        /// The peer.
        addr: SocketAddr,
        /// What was wrong.
        reason: String,
    },
    /// The connection closed while the call was in flight: it may or may not have run.
    #[error("{addr}: connection lost with the call in flight")]
    Lost {
        /// The peer.
        addr: SocketAddr,
    },
}

/// A same-thread wake-up for one waiting task; notifications before the wait are kept.
#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// Wakes the waiter (or the next one).
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits for a notification.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

/// A same-thread one-shot value.
pub struct Slot<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

impl<T> Slot<T> {
    /// An empty slot.
    pub fn new() -> Rc<Self> {
        Rc::new(Self {
            value: RefCell::new(None),
            waker: RefCell::new(None),
        })
    }

    /// Fills the slot and wakes its waiter.
    pub fn put(&self, value: T) {
        *self.value.borrow_mut() = Some(value);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits for the value.
    pub async fn take(&self) -> T {
        poll_fn(|cx| match self.value.borrow_mut().take() {
            Some(v) => Poll::Ready(v),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Frames queued by any task of the shard, written by the connection's writer task; or sent at
/// once by [`Writer::flush`] (one non-blocking `send` of everything queued, when the writer task
/// has nothing in flight): a member answering a batch of requests flushes at the batch's end
/// instead of waking the writer task.
///
/// Bounded in two steps. Past `room` bytes queued ([`Writer::has_room`] false), the tasks that
/// produce frames on demand wait in [`Writer::room`]: a connection's reader stops reading
/// requests, so TCP holds the peer back, and a caller waits before sending. Frames nobody can
/// hold back (events, backups, answers that waited for acks) still queue, up to
/// [`MAX_QUEUED`]: a peer that far behind is a slow consumer and its connection is closed.
pub struct Writer {
    buf: RefCell<AlignedVec>,
    notify: Notify,
    closed: Cell<bool>,
    max_payload: usize,
    /// Queued bytes past which producers wait (`network.max-queued-kib`).
    room: usize,
    /// A second handle of the socket for direct sends; `None` until [`Writer::run`] starts.
    direct: RefCell<Option<socket2::Socket>>,
    /// The writer task has bytes in flight: pushes queue behind them.
    writing: Cell<bool>,
    /// Bytes of the write in flight (taken from `buf`, not yet all written).
    in_flight: Cell<usize>,
    /// Tasks waiting in [`Writer::room`].
    waiting: RefCell<Vec<Waker>>,
}

/// A writer that has fallen this far behind is a slow consumer: its connection is closed.
pub const MAX_QUEUED: usize = 64 << 20;

/// The writer task's buffer is given back to the allocator after a write larger than this, so a
/// connection that once had a burst queued (a partition's snapshot, a flood it was slow to
/// read) does not keep its peak for life.
const KEEP_BUFFER: usize = 1 << 20;

impl Writer {
    /// A writer for frames of at most `max_payload` payload bytes, whose producers wait while
    /// `room` bytes or more are queued.
    pub fn new(max_payload: usize, room: usize) -> Rc<Self> {
        let writer = Rc::new(Self {
            buf: RefCell::new(AlignedVec::new()),
            notify: Notify::default(),
            closed: Cell::new(false),
            max_payload,
            room,
            direct: RefCell::new(None),
            writing: Cell::new(false),
            in_flight: Cell::new(0),
            waiting: RefCell::new(Vec::new()),
        });
        crate::readiness::track(&writer);
        writer
    }

    /// Whether fewer than the bound's bytes are queued (or the writer closed: nothing waits on
    /// a closed connection).
    pub fn has_room(&self) -> bool {
        self.closed.get() || self.queued() < self.room
    }

    /// Waits until [`Writer::has_room`]: the peer read enough of what is queued, or the
    /// connection closed.
    pub async fn room(&self) {
        poll_fn(|cx| {
            if self.has_room() {
                return Poll::Ready(());
            }
            let mut waiting = self.waiting.borrow_mut();
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }

    /// Wakes the tasks waiting for room once there is some.
    fn drained(&self) {
        if !self.has_room() {
            return;
        }
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for w in waiting {
            w.wake();
        }
    }

    /// Queues one frame.
    ///
    /// Errors: `TooLarge` for a payload over the bound; `Lost` semantics are the caller's (a
    /// closed writer drops frames silently: its reader fails the calls in flight).
    pub fn push(&self, header: &Header, payload: &[u8]) -> Result<(), FrameError> {
        if self.closed.get() {
            return Ok(());
        }
        let mut buf = self.buf.borrow_mut();
        frame::encode(&mut buf, header, payload, self.max_payload)?;
        if buf.len() + self.in_flight.get() > MAX_QUEUED {
            drop(buf);
            tracing::warn!("peer is not reading; closing the connection");
            self.abort();
        }
        self.notify.notify();
        Ok(())
    }

    /// Sends what is queued now, without waiting, unless the writer task has a write in
    /// flight. What the socket does not take stays queued for the writer task, in order.
    pub fn flush(&self) {
        if self.writing.get() || self.closed.get() {
            return;
        }
        let direct = self.direct.borrow();
        let Some(sock) = direct.as_ref() else {
            return;
        };
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        match sock.send_with_flags(&buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Ok(n) if n == buf.len() => buf.clear(),
            Ok(n) => {
                let rest = buf[n..].to_vec();
                buf.clear();
                buf.extend_from_slice(&rest);
            }
            // Full, or failed: the writer task writes it (and meets the error, if any).
            Err(_) => return,
        }
        drop(buf);
        self.drained();
    }

    /// Queues a control message.
    pub fn push_control(&self, msg: &Control) {
        match corecast_engine::payload::encode(msg) {
            Ok(bytes) => {
                if let Err(e) = self.push(&Header::new(FrameKind::Control), &bytes) {
                    tracing::warn!(error = %e, "control message not sent");
                }
            }
            Err(e) => tracing::warn!(error = %e, "control message not encoded"),
        }
    }

    /// Stops writing; the writer task ends once its write in flight, if any, is done.
    pub fn close(&self) {
        self.closed.set(true);
        self.notify.notify();
        self.drained();
    }

    /// Closes at once: drops what is queued and shuts the socket down, which also fails a
    /// write in flight to a peer that does not read (else the writer task, its buffer and the
    /// socket would wait on that peer for ever).
    pub fn abort(&self) {
        *self.buf.borrow_mut() = AlignedVec::new();
        if let Some(sock) = self.direct.borrow().as_ref() {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        self.close();
    }

    /// Whether the connection closed.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Bytes queued and not yet handed to the socket, the write in flight included.
    pub fn queued(&self) -> usize {
        self.buf.borrow().len() + self.in_flight.get()
    }

    /// Writes queued frames until closed or a write fails.
    pub async fn run(self: Rc<Self>, mut stream: TcpStream) {
        match socket2::SockRef::from(&stream).try_clone() {
            Ok(sock) => *self.direct.borrow_mut() = Some(sock),
            Err(e) => tracing::debug!(error = %e, "no direct sends on this connection"),
        }
        let mut out = AlignedVec::new();
        loop {
            self.notify.wait().await;
            if self.closed.get() {
                break;
            }
            std::mem::swap(&mut out, &mut *self.buf.borrow_mut());
            if out.is_empty() {
                continue;
            }
            self.writing.set(true);
            self.in_flight.set(out.len());
            let written = stream.write_all(&out).await;
            self.writing.set(false);
            self.in_flight.set(0);
            if let Err(e) = written {
                tracing::debug!(error = %e, "write failed; closing the connection");
                self.close();
                break;
            }
            if out.capacity() > KEEP_BUFFER {
                out = AlignedVec::new();
            } else {
                out.clear();
            }
            self.drained();
        }
        // Direct sends end with the writer.
        self.direct.borrow_mut().take();
        // Shut the socket down for both halves, so the reader on the other descriptor ends too.
        let _ = socket2::SockRef::from(&stream).shutdown(std::net::Shutdown::Both);
        let _ = stream.close().await;
    }
}

/// Reads the next frame into `rb`, reading from `stream` as needed. `Ok(None)` at a clean end
/// of stream. The frame's payload is copied out only by callers that keep it.
pub async fn read_frame(
    stream: &mut TcpStream,
    rb: &mut ReadBuf,
    addr: SocketAddr,
) -> Result<Option<(Header, Bytes)>, ConnError> {
    loop {
        if let Some((h, p)) = rb
            .next_frame()
            .map_err(|source| ConnError::Frame { addr, source })?
        {
            return Ok(Some((h, copy(p))));
        }
        if !fill(stream, rb, addr).await? {
            rb.finish()
                .map_err(|source| ConnError::Frame { addr, source })?;
            return Ok(None);
        }
    }
}

/// Bytes copied into a payload buffer of their own (aligned for archives), out of a read
/// buffer or a batch's answer.
pub(crate) fn copy(p: &[u8]) -> Bytes {
    let mut bytes = Bytes::with_capacity(p.len());
    bytes.extend_from_slice(p);
    bytes
}

/// Reads once into `rb`; `false` at end of stream.
pub async fn fill(
    stream: &mut TcpStream,
    rb: &mut ReadBuf,
    addr: SocketAddr,
) -> Result<bool, ConnError> {
    fill_watched(stream, rb, addr, &readiness::watch_none(), false, || false).await
}

/// Reads once into `rb`, the short way first when the socket is watched, the connection
/// `serial` and `expect` says something is expected on it ([`readiness::read`]); `false` at
/// end of stream.
pub async fn fill_watched(
    stream: &mut TcpStream,
    rb: &mut ReadBuf,
    addr: SocketAddr,
    watch: &readiness::Watch,
    serial: bool,
    expect: impl Fn() -> bool,
) -> Result<bool, ConnError> {
    if let Some(n) = readiness::read(watch, rb.spare(), serial, expect)
        .await
        .map_err(|e| io_error(addr, &e))?
    {
        rb.filled(n);
        return Ok(n > 0);
    }
    let n = stream
        .read(rb.spare())
        .await
        .map_err(|e| io_error(addr, &e))?;
    rb.filled(n);
    Ok(n > 0)
}

/// An I/O error as a [`ConnError`].
pub fn io_error(addr: SocketAddr, e: &io::Error) -> ConnError {
    ConnError::Io {
        addr,
        reason: e.to_string(),
    }
}

/// Decodes a control message from a payload (validated).
pub fn decode_control(payload: &[u8], addr: SocketAddr) -> Result<Control, ConnError> {
    corecast_engine::payload::decode::<Control>(payload).map_err(|e| ConnError::Protocol {
        addr,
        reason: format!("malformed control message: {e}"),
    })
}

/// Connects to `addr`, sets the socket options and says hello; returns the stream once the
/// peer welcomed it.
///
/// Errors: connect or I/O failures, a refusal (cluster name or secret), protocol errors.
pub async fn connect(
    addr: SocketAddr,
    hello: &Control,
    socket_buffer: usize,
    max_payload: usize,
    timeout: Duration,
) -> Result<(TcpStream, ReadBuf), ConnError> {
    let mut stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(|e| ConnError::Io {
            addr,
            reason: e.to_string(),
        })?;
    configure(&stream, socket_buffer);
    let mut out = AlignedVec::new();
    let bytes = corecast_engine::payload::encode(hello).map_err(|e| ConnError::Protocol {
        addr,
        reason: e.to_string(),
    })?;
    frame::encode(
        &mut out,
        &Header::new(FrameKind::Control),
        &bytes,
        max_payload,
    )
    .map_err(|source| ConnError::Frame { addr, source })?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| io_error(addr, &e))?;
    let mut rb = ReadBuf::new(max_payload);
    let reply = glommio::timer::timeout(timeout, async {
        Ok(read_frame(&mut stream, &mut rb, addr).await)
    })
    .await
    .map_err(|_| ConnError::Protocol {
        addr,
        reason: "no answer to the handshake".into(),
    })??;
    match reply {
        Some((h, payload)) if h.kind == FrameKind::Control => {
            match decode_control(&payload, addr)? {
                Control::Welcome { .. } => Ok((stream, rb)),
                Control::Refused { reason } => Err(ConnError::Refused { addr, reason }),
                other => Err(ConnError::Protocol {
                    addr,
                    reason: format!("expected a welcome, got {other:?}"),
                }),
            }
        }
        Some(_) => Err(ConnError::Protocol {
            addr,
            reason: "expected a control frame".into(),
        }),
        None => Err(ConnError::Lost { addr }),
    }
}

/// TCP_NODELAY and buffer sizes (0 keeps the system's).
pub fn configure(stream: &TcpStream, socket_buffer: usize) {
    let sock = socket2::SockRef::from(stream);
    if let Err(e) = sock.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    if socket_buffer > 0 {
        let _ = sock.set_send_buffer_size(socket_buffer);
        let _ = sock.set_recv_buffer_size(socket_buffer);
    }
}

/// The answer to a request: its header and payload.
pub type Response = Result<(Header, Bytes), ConnError>;

/// An outbound connection to one remote shard: requests out, responses matched by correlation.
pub struct Outbound {
    addr: SocketAddr,
    writer: Rc<Writer>,
    pending: RefCell<AHashMap<u64, Rc<Slot<Response>>>>,
}

impl Outbound {
    /// Wraps a connected, welcomed stream: spawns its writer and reader tasks on this shard.
    /// `on_control` gets control frames the peer sends on it. [`Outbound::call`] waits while
    /// `room` bytes or more are queued.
    pub fn start(
        stream: TcpStream,
        rb: ReadBuf,
        addr: SocketAddr,
        max_payload: usize,
        room: usize,
        on_control: impl Fn(Control) + 'static,
        on_event: impl Fn(&Header, &[u8]) + 'static,
    ) -> Result<Rc<Outbound>, ConnError> {
        let (reader, writer_stream) = crate::sys::split(stream).map_err(|e| io_error(addr, &e))?;
        let writer = Writer::new(max_payload, room);
        glommio::spawn_local(writer.clone().run(writer_stream)).detach();
        let conn = Rc::new(Outbound {
            addr,
            writer,
            pending: RefCell::new(AHashMap::new()),
        });
        let this = conn.clone();
        glommio::spawn_local(async move {
            let end = this.read_loop(reader, rb, on_control, on_event).await;
            if let Err(e) = &end {
                tracing::debug!(error = %e, "connection closed");
            }
            this.writer.close();
            let lost: Vec<_> = this.pending.borrow_mut().drain().collect();
            for (_, slot) in lost {
                slot.put(Err(ConnError::Lost { addr: this.addr }));
            }
        })
        .detach();
        Ok(conn)
    }

    async fn read_loop(
        &self,
        mut stream: TcpStream,
        mut rb: ReadBuf,
        on_control: impl Fn(Control),
        on_event: impl Fn(&Header, &[u8]),
    ) -> Result<(), ConnError> {
        let addr = self.addr;
        let watch = readiness::watch(stream.as_raw_fd());
        loop {
            let Some((h, payload)) = rb
                .next_frame()
                .map_err(|source| ConnError::Frame { addr, source })?
            else {
                let serial = self.pending.borrow().len() <= readiness::SERIAL;
                let expect = || !self.pending.borrow().is_empty();
                if !fill_watched(&mut stream, &mut rb, addr, &watch, serial, expect).await? {
                    rb.finish()
                        .map_err(|source| ConnError::Frame { addr, source })?;
                    return Ok(());
                }
                continue;
            };
            match h.kind {
                FrameKind::Response => {
                    let slot = self.pending.borrow_mut().remove(&h.correlation);
                    if let Some(slot) = slot {
                        slot.put(Ok((h, copy(payload))));
                    }
                }
                FrameKind::Control => on_control(decode_control(payload, addr)?),
                FrameKind::Event => on_event(&h, payload),
                FrameKind::Request | FrameKind::Replica => {
                    return Err(ConnError::Protocol {
                        addr,
                        reason: "request on an outbound connection".into(),
                    })
                }
            }
            if self.writer.is_closed() {
                break;
            }
        }
        Ok(())
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.writer.is_closed()
    }

    /// The peer.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a control message.
    pub fn send_control(&self, msg: &Control) {
        self.writer.push_control(msg);
    }

    /// Sends a request and waits for its response. The header's correlation id must be unique
    /// among this connection's calls in flight (callers number their calls). While the
    /// connection has its bound of bytes queued (the peer reads no faster), it waits before
    /// queueing the request: callers offering more than the peer takes are held back here.
    ///
    /// Errors: `Lost` if the connection closes first, `Frame` for a payload over the bound.
    pub async fn call(&self, header: Header, payload: &[u8]) -> Response {
        self.writer.room().await;
        match self.start_call(header, payload) {
            Ok(slot) => slot.take().await,
            Err(e) => Err(e),
        }
    }

    /// Queues a request now (so requests leave in the order they were started) and returns
    /// where its response will be put.
    ///
    /// Errors: `Lost` if the connection is closed, `Frame` for a payload over the bound,
    /// `Protocol` for a correlation id already in flight.
    pub fn start_call(
        &self,
        header: Header,
        payload: &[u8],
    ) -> Result<Rc<Slot<Response>>, ConnError> {
        if self.is_closed() {
            return Err(ConnError::Lost { addr: self.addr });
        }
        let correlation = header.correlation;
        let slot = Slot::new();
        if self
            .pending
            .borrow_mut()
            .insert(correlation, slot.clone())
            .is_some()
        {
            return Err(ConnError::Protocol {
                addr: self.addr,
                reason: format!("call {correlation} is already in flight"),
            });
        }
        if let Err(source) = self.writer.push(&header, payload) {
            self.pending.borrow_mut().remove(&correlation);
            return Err(ConnError::Frame {
                addr: self.addr,
                source,
            });
        }
        Ok(slot)
    }

    /// Queues a frame that gets no response.
    ///
    /// Errors: `Frame` for a payload over the bound.
    pub fn send(&self, header: &Header, payload: &[u8]) -> Result<(), ConnError> {
        self.writer
            .push(header, payload)
            .map_err(|source| ConnError::Frame {
                addr: self.addr,
                source,
            })
    }

    /// Bytes queued for this connection and not yet written.
    pub fn queued(&self) -> usize {
        self.writer.queued()
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.writer.close();
    }

    /// Tears the connection down at once, both ways: what is queued is dropped and calls in
    /// flight fail as lost (a cut network, for fault injection).
    pub fn abort(&self) {
        self.writer.abort();
    }
}

/// The hello a member or client sends first.
pub fn hello(cluster: &str, secret: &str, role: Role, id: u64) -> Control {
    Control::Hello {
        cluster: cluster.to_owned(),
        secret: secret.to_owned(),
        role,
        id,
    }
}
