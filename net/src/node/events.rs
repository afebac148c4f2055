//! Listeners across the cluster: registering a member's or client's listeners on every shard of
//! every other member, and delivering the events those shards publish.
//!
//! The subscriber's shard 0 keeps its listeners and registers each one on its own outbound
//! connection to every shard of every member (a `LISTEN` request, answered once the remote shard
//! holds it). The remote shard delivers the listener's events as `Event` frames back on that
//! same connection, so one shard's events for a listener arrive in the order they were published.
//! A registration lives as long as its connection: when the connection closes the publishing
//! shard drops it, and the subscriber registers again on the next connection. A loop on shard 0
//! registers listeners on members that joined and on connections made anew.

use std::collections::HashSet;
use std::rc::Weak;

use corecast_engine::events::{Dropped, EventSink, ListenSpec};
use rkyv::{Archive, Deserialize, Serialize};

use super::*;

/// The engine's service id, under which the listener requests travel.
pub(super) const LISTENER_SERVICE: u16 = 0;
/// Registers a listener on the receiving shard (payload: [`ListenRequest`]).
pub(super) const LISTEN: u16 = 0xFF00;
/// Drops a listener on the receiving shard (payload: [`UnlistenRequest`]).
pub(super) const UNLISTEN: u16 = 0xFF01;

/// Bytes queued on a connection past which a listener's events are dropped (the subscriber does
/// not keep up).
const EVENT_BACKLOG: usize = 64 << 20;

/// How often shard 0 checks that every listener is registered on every member's shards.
const REGISTER_EVERY: Duration = Duration::from_millis(100);

#[derive(Archive, Serialize, Deserialize)]
pub(super) struct ListenRequest {
    id: u64,
    service: u16,
    name: String,
    values: bool,
}

#[derive(Archive, Serialize, Deserialize)]
pub(super) struct UnlistenRequest {
    id: u64,
}

/// Shard 0's listeners and where they are registered.
#[derive(Default)]
pub(super) struct Subscriptions {
    listeners: AHashMap<u64, (ListenSpec, flume::Sender<Bytes>)>,
    /// Per remote shard address: the connection the registrations were made on, and which.
    registered: AHashMap<SocketAddr, (Weak<Outbound>, HashSet<u64>)>,
    /// Whether the registering loop runs.
    running: bool,
}

/// A publishing shard's sink for one connection's listeners.
struct WriterSink {
    writer: Weak<Writer>,
    dropped: Dropped,
}

impl EventSink for WriterSink {
    fn deliver(&self, listener: u64, service: ServiceId, event: &[u8]) -> bool {
        let Some(writer) = self.writer.upgrade().filter(|w| !w.is_closed()) else {
            return false;
        };
        if writer.queued() > EVENT_BACKLOG {
            self.dropped.note(listener);
            return true;
        }
        let header = Header {
            correlation: listener,
            service: service.0,
            ..Header::new(FrameKind::Event)
        };
        if let Err(e) = writer.push(&header, event) {
            tracing::warn!(listener, error = %e, "event not sent");
        }
        true
    }
}

/// The listeners registered on one inbound connection, and the sink they deliver into.
#[derive(Default)]
pub(super) struct Held {
    ids: Vec<u64>,
    sink: Option<Rc<dyn EventSink>>,
}

impl Held {
    /// The connection closed: drops its registrations (not ones made anew elsewhere).
    pub(super) fn release(self) {
        if let Some(sink) = &self.sink {
            for id in self.ids {
                extension::remove_listener_from(id, sink);
            }
        }
    }
}

impl ShardNet {
    /// Whether a request frame is a listener registration (handled by [`Self::serve_listener`]).
    pub(super) fn is_listener_request(h: &Header) -> bool {
        h.service == LISTENER_SERVICE && (h.op == LISTEN || h.op == UNLISTEN)
    }

    /// Registers or drops a listener for the peer of `writer`, remembering the ids registered on
    /// the connection in `held` (dropped when it closes), and answers.
    ///
    /// Errors: the reason to close the connection (a malformed request).
    pub(super) fn serve_listener(
        &self,
        h: &Header,
        payload: &[u8],
        writer: &Rc<Writer>,
        held: &mut Held,
    ) -> Result<(), String> {
        if h.op == LISTEN {
            let req = payload::access::<ListenRequest>(payload)
                .map_err(|e| format!("malformed listen request: {e}"))?;
            let spec = ListenSpec {
                id: req.id.to_native(),
                service: ServiceId(req.service.to_native()),
                name: req.name.to_string(),
                values: req.values,
            };
            let sink = held
                .sink
                .get_or_insert_with(|| {
                    Rc::new(WriterSink {
                        writer: Rc::downgrade(writer),
                        dropped: Dropped::default(),
                    })
                })
                .clone();
            extension::add_listener(&spec, sink);
            if !held.ids.contains(&spec.id) {
                held.ids.push(spec.id);
            }
        } else {
            let req = payload::access::<UnlistenRequest>(payload)
                .map_err(|e| format!("malformed unlisten request: {e}"))?;
            let id = req.id.to_native();
            if let Some(sink) = &held.sink {
                extension::remove_listener_from(id, sink);
            }
            held.ids.retain(|&h| h != id);
        }
        let reply = Header {
            status: Status::Ok as u16,
            correlation: h.correlation,
            service: h.service,
            op: h.op,
            ..Header::new(FrameKind::Response)
        };
        writer.push(&reply, &[]).map_err(|e| e.to_string())
    }

    /// An event frame on one of this shard's outbound connections.
    pub(super) fn on_event(&self, h: &Header, payload: &[u8]) {
        let subs = self.subs.borrow();
        if let Some((_, tx)) = subs.listeners.get(&h.correlation) {
            if let Err(flume::TrySendError::Full(_)) = tx.try_send(crate::conn::copy(payload)) {
                tracing::warn!(
                    listener = h.correlation,
                    "a listener is behind: event dropped"
                );
            }
        }
    }

    /// Shard 0: adds a listener and registers it on every member's shards known now.
    pub(super) async fn listen(self: Rc<Self>, spec: ListenSpec, tx: flume::Sender<Bytes>) {
        let start = {
            let mut subs = self.subs.borrow_mut();
            subs.listeners.insert(spec.id, (spec, tx));
            !std::mem::replace(&mut subs.running, true)
        };
        if start {
            glommio::spawn_local(register_loop(Rc::downgrade(&self))).detach();
        }
        let within = self.net.timing.member_timeout.min(Duration::from_secs(5));
        let _ = glommio::timer::timeout(within, async {
            self.register_all().await;
            Ok(())
        })
        .await;
    }

    /// Shard 0: drops a listener here and on every shard it was registered on.
    pub(super) fn unlisten(&self, id: u64) {
        let mut subs = self.subs.borrow_mut();
        subs.listeners.remove(&id);
        let payload = match payload::encode(&UnlistenRequest { id }) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "unlisten not encoded");
                return;
            }
        };
        for (conn, ids) in subs.registered.values_mut() {
            if ids.remove(&id) {
                if let Some(conn) = conn.upgrade() {
                    let header = Header {
                        service: LISTENER_SERVICE,
                        op: UNLISTEN,
                        correlation: self.next_call(),
                        ..Header::new(FrameKind::Request)
                    };
                    let _ = conn.send(&header, &payload);
                }
            }
        }
    }

    /// The base address of every shard of every other member in this shard's view.
    fn listener_targets(&self) -> Vec<SocketAddr> {
        let view = self.view.borrow();
        let mut targets = Vec::new();
        for m in view.members.iter().filter(|m| m.id != self.net.id) {
            for s in 0..m.shards {
                let mut addr = m.addr;
                addr.set_port(addr.port().wrapping_add(s as u16));
                targets.push(addr);
            }
        }
        targets
    }

    /// Registers every listener wherever it is missing (new members, new connections).
    async fn register_all(self: &Rc<Self>) {
        let targets = self.listener_targets();
        for addr in targets {
            let Ok(conn) = self.connection(addr).await else {
                continue;
            };
            let missing: Vec<ListenSpec> = {
                let mut subs = self.subs.borrow_mut();
                let Subscriptions {
                    listeners,
                    registered,
                    ..
                } = &mut *subs;
                let entry = registered
                    .entry(addr)
                    .or_insert_with(|| (Rc::downgrade(&conn), HashSet::new()));
                if !entry.0.upgrade().is_some_and(|c| Rc::ptr_eq(&c, &conn)) {
                    *entry = (Rc::downgrade(&conn), HashSet::new());
                }
                listeners
                    .values()
                    .filter(|(spec, _)| !entry.1.contains(&spec.id))
                    .map(|(spec, _)| spec.clone())
                    .collect()
            };
            for spec in missing {
                let req = ListenRequest {
                    id: spec.id,
                    service: spec.service.0,
                    name: spec.name.clone(),
                    values: spec.values,
                };
                let Ok(payload) = payload::encode(&req) else {
                    continue;
                };
                let header = Header {
                    service: LISTENER_SERVICE,
                    op: LISTEN,
                    correlation: self.next_call(),
                    ..Header::new(FrameKind::Request)
                };
                match conn.call(header, &payload).await {
                    Ok((h, _)) if h.status == Status::Ok as u16 => {
                        let mut subs = self.subs.borrow_mut();
                        // Still wanted, and still the same connection?
                        if subs.listeners.contains_key(&spec.id) {
                            if let Some(entry) = subs
                                .registered
                                .get_mut(&addr)
                                .filter(|e| e.0.upgrade().is_some_and(|c| Rc::ptr_eq(&c, &conn)))
                            {
                                entry.1.insert(spec.id);
                            }
                        }
                    }
                    Ok(_) => tracing::warn!(%addr, "listener refused"),
                    Err(e) => tracing::debug!(%addr, error = %e, "listener not registered"),
                }
            }
        }
    }
}

/// Shard 0: keeps every listener registered on every member's shards while there are any.
async fn register_loop(sn: Weak<ShardNet>) {
    loop {
        glommio::timer::sleep(REGISTER_EVERY).await;
        let Some(sn) = sn.upgrade() else { return };
        if sn.stopped.get() {
            return;
        }
        {
            let mut subs = sn.subs.borrow_mut();
            if subs.listeners.is_empty() {
                subs.running = false;
                subs.registered.clear();
                return;
            }
            let targets: HashSet<SocketAddr> = sn.listener_targets().into_iter().collect();
            subs.registered.retain(|a, _| targets.contains(a));
        }
        sn.register_all().await;
    }
}
