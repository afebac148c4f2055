//! The Redis commands the front door answers, each mapped onto the configured Map (strings) or
//! onto Topics (PUBLISH, SUBSCRIBE), with the replies and error texts Redis gives.
//!
//! A command runs through the shard's [`Invoker`]: in place when this shard owns the key's
//! partition, otherwise forwarded to the owning shard or member; the connection awaits each
//! command before the next, so replies come back in order. What a key command does to the map is
//! one Map operation (SET with its options, INCRBY and APPEND are single read-modify-write
//! operations on the owner), so it is atomic and backed up like any other write.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use corecast_engine::partition::PartitionId;
use corecast_engine::spi::DistributedObject;
use corecast_engine::{InvocationError, Invoker, ObjectHandle};

use super::glob;
use super::proto::{self, Command, Limits, Version};
use crate::map::update::Updated;
use crate::map::Map;
use crate::topic::{Topic, TopicService};

/// The Redis version the front door reports (INFO, HELLO); the commands it answers behave as
/// that version's do.
pub const REDIS_VERSION: &str = "7.0.0";

/// Topics remembered per shard for PUBLISH before the cache starts over.
const TOPIC_CACHE: usize = 1024;

/// What one shard's front door shares between its connections.
pub struct Door {
    /// The map Redis commands work on.
    pub map: Map,
    /// This shard's invoker.
    pub invoker: Invoker,
    /// Request size limits.
    pub limits: Limits,
    /// The port this shard listens on.
    pub port: u16,
    /// Connections open on this shard.
    pub clients: Cell<usize>,
    next_id: Cell<u64>,
    shard: u32,
    started: Instant,
    topics: RefCell<AHashMap<String, Topic>>,
}

impl Door {
    /// A door for shard `shard` listening on `port`.
    pub fn new(map: Map, invoker: Invoker, limits: Limits, port: u16, shard: u32) -> Self {
        Self {
            map,
            invoker,
            limits,
            port,
            clients: Cell::new(0),
            next_id: Cell::new(0),
            shard,
            started: Instant::now(),
            topics: RefCell::new(AHashMap::new()),
        }
    }

    /// A client id unique on this member: a per-shard sequence number and the shard.
    pub fn next_client_id(&self) -> u64 {
        let n = self.next_id.get() + 1;
        self.next_id.set(n);
        (n << 8) | u64::from(self.shard & 0xff)
    }

    async fn topic(&self, channel: &[u8]) -> Result<Topic, InvocationError> {
        let name = String::from_utf8_lossy(channel).into_owned();
        if let Some(t) = self.topics.borrow().get(&name) {
            return Ok(t.clone());
        }
        let topic = Topic::from_handle(
            ObjectHandle::open::<TopicService>(self.invoker.clone(), &name).await?,
        );
        let mut topics = self.topics.borrow_mut();
        if topics.len() >= TOPIC_CACHE {
            topics.clear();
        }
        topics.insert(name, topic.clone());
        Ok(topic)
    }
}

/// A message for a subscribed connection: the channel and the payload.
pub type Delivery = (Vec<u8>, Vec<u8>);

/// One connection's state.
pub struct Session {
    /// The protocol version (HELLO switches it).
    pub version: Version,
    /// The client's id.
    pub id: u64,
    name: Option<Vec<u8>>,
    subscriptions: AHashMap<Vec<u8>, glommio::task::JoinHandle<()>>,
    deliveries: (flume::Sender<Delivery>, flume::Receiver<Delivery>),
}

impl Session {
    /// A RESP2 session for client `id`.
    pub fn new(id: u64) -> Self {
        Self {
            version: Version::Resp2,
            id,
            name: None,
            subscriptions: AHashMap::new(),
            deliveries: flume::bounded(4096),
        }
    }

    /// Whether the connection has subscriptions (messages may arrive between requests).
    pub fn subscribed(&self) -> bool {
        !self.subscriptions.is_empty()
    }

    /// The next message of a subscribed channel.
    pub async fn delivery(&self) -> Option<Delivery> {
        self.deliveries.1.recv_async().await.ok()
    }

    /// A message that is already waiting, if any.
    pub fn try_delivery(&self) -> Option<Delivery> {
        self.deliveries.1.try_recv().ok()
    }

    /// Writes a message as Redis pushes it: `message`, the channel, the payload.
    pub fn write_delivery(&self, (channel, payload): &Delivery, out: &mut Vec<u8>) {
        proto::push(out, self.version, 3);
        proto::bulk(out, b"message");
        proto::bulk(out, channel);
        proto::bulk(out, payload);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (_, task) in self.subscriptions.drain() {
            task.cancel();
        }
    }
}

/// After a command: keep serving, or close once the replies are out (QUIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep serving.
    Continue,
    /// Send the replies, then close.
    Close,
}

/// Each command: its name, Redis' arity (negative: at least that many, the name included), and
/// its flags for COMMAND.
const COMMANDS: &[(&str, i64, &[&str])] = &[
    ("get", 2, &["readonly", "fast"]),
    ("set", -3, &["write", "denyoom"]),
    ("getdel", 2, &["write", "fast"]),
    ("del", -2, &["write"]),
    ("exists", -2, &["readonly", "fast"]),
    ("incr", 2, &["write", "denyoom", "fast"]),
    ("incrby", 3, &["write", "denyoom", "fast"]),
    ("decr", 2, &["write", "denyoom", "fast"]),
    ("decrby", 3, &["write", "denyoom", "fast"]),
    ("append", 3, &["write", "denyoom", "fast"]),
    ("strlen", 2, &["readonly", "fast"]),
    ("mget", -2, &["readonly", "fast"]),
    ("mset", -3, &["write", "denyoom"]),
    ("expire", 3, &["write", "fast"]),
    ("pexpire", 3, &["write", "fast"]),
    ("ttl", 2, &["readonly", "fast"]),
    ("pttl", 2, &["readonly", "fast"]),
    ("persist", 2, &["write", "fast"]),
    ("dbsize", 1, &["readonly", "fast"]),
    ("flushdb", -1, &["write"]),
    ("flushall", -1, &["write"]),
    ("keys", 2, &["readonly"]),
    ("scan", -2, &["readonly"]),
    ("ping", -1, &["fast"]),
    ("echo", 2, &["fast"]),
    ("select", 2, &["loading", "stale", "fast"]),
    ("info", -1, &["loading", "stale"]),
    ("client", -2, &["loading", "stale"]),
    ("command", -1, &["loading", "stale"]),
    ("config", -2, &["admin", "loading", "stale"]),
    ("quit", -1, &["fast"]),
    ("hello", -1, &["fast"]),
    ("publish", 3, &["pubsub", "fast"]),
    ("subscribe", -2, &["pubsub"]),
    ("unsubscribe", -1, &["pubsub"]),
];

/// Key positions for COMMAND: first, last (-1: the last argument), step.
fn key_spec(name: &str) -> (i64, i64, i64) {
    match name {
        "del" | "exists" | "mget" => (1, -1, 1),
        "mset" => (1, -1, 2),
        "get" | "set" | "getdel" | "incr" | "incrby" | "decr" | "decrby" | "append" | "strlen"
        | "expire" | "pexpire" | "ttl" | "pttl" | "persist" => (1, 1, 1),
        _ => (0, 0, 0),
    }
}

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

fn err(out: &mut Vec<u8>, text: &str) -> Flow {
    proto::error(out, text);
    Flow::Continue
}

fn failed(out: &mut Vec<u8>, e: &InvocationError) -> Flow {
    err(out, &format!("ERR {e}"))
}

/// A value as a bulk string, a missing one as the version's null.
fn value_or_null(
    out: &mut Vec<u8>,
    session: &Session,
    value: Result<Option<Vec<u8>>, InvocationError>,
) -> Flow {
    match value {
        Ok(Some(v)) => proto::bulk(out, &v),
        Ok(None) => proto::null(out, session.version),
        Err(e) => return failed(out, &e),
    }
    Flow::Continue
}

fn ok(out: &mut Vec<u8>) -> Flow {
    proto::simple(out, "OK");
    Flow::Continue
}

/// `'a' 'b' ` as Redis quotes the first arguments of an unknown command.
fn args_beginning(cmd: &Command, buf: &[u8]) -> String {
    let mut text = String::new();
    for arg in cmd.args(buf).skip(1).take(8) {
        let shown: String = String::from_utf8_lossy(arg).chars().take(128).collect();
        text.push_str(&format!("'{shown}' "));
    }
    text
}

/// Runs one command and writes its reply (or replies: SUBSCRIBE answers once per channel).
pub async fn run(
    door: &Door,
    session: &mut Session,
    cmd: &Command,
    buf: &[u8],
    out: &mut Vec<u8>,
) -> Flow {
    let raw_name = cmd.arg(buf, 0);
    let Some(&(name, arity, _)) = COMMANDS
        .iter()
        .find(|(n, _, _)| proto::eq_ignore_case(raw_name, n))
    else {
        let shown: String = String::from_utf8_lossy(raw_name)
            .chars()
            .take(128)
            .collect();
        return err(
            out,
            &format!(
                "ERR unknown command '{shown}', with args beginning with: {}",
                args_beginning(cmd, buf)
            ),
        );
    };
    let n = cmd.len() as i64;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        return err(
            out,
            &format!("ERR wrong number of arguments for '{name}' command"),
        );
    }
    if session.subscribed()
        && session.version == Version::Resp2
        && !matches!(name, "subscribe" | "unsubscribe" | "ping" | "quit")
    {
        return err(
            out,
            &format!(
                "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            ),
        );
    }
    let arg = |i: usize| cmd.arg(buf, i);
    let map = &door.map;
    match name {
        "get" => {
            let version = session.version;
            let written = map
                .get_with(arg(1), |v| match v {
                    Some(v) => proto::bulk(out, v),
                    None => proto::null(out, version),
                })
                .await;
            if let Err(e) = written {
                return failed(out, &e);
            }
        }
        "set" => return set(map, session, cmd, buf, out).await,
        "getdel" => return value_or_null(out, session, map.remove(arg(1)).await),
        "del" | "exists" => {
            let mut n = 0;
            for key in cmd.args(buf).skip(1) {
                let hit = if name == "del" {
                    map.delete(key).await
                } else {
                    map.contains_key(key).await
                };
                match hit {
                    Ok(hit) => n += i64::from(hit),
                    Err(e) => return failed(out, &e),
                }
            }
            proto::integer(out, n);
        }
        "incr" | "decr" | "incrby" | "decrby" => {
            let delta = match name {
                "incr" => 1,
                "decr" => -1,
                _ => match proto::parse_i64(arg(2)) {
                    Some(d) if name == "incrby" => d,
                    Some(d) => match d.checked_neg() {
                        Some(d) => d,
                        None => return err(out, "ERR decrement would overflow"),
                    },
                    None => return err(out, NOT_AN_INTEGER),
                },
            };
            match map.add_integer(arg(1), delta).await {
                Ok(Updated::Integer(v)) => proto::integer(out, v),
                Ok(Updated::Overflow) => {
                    return err(out, "ERR increment or decrement would overflow")
                }
                Ok(_) => return err(out, NOT_AN_INTEGER),
                Err(e) => return failed(out, &e),
            }
        }
        "append" => match map.append(arg(1), arg(2)).await {
            Ok(Updated::Length(len)) => proto::integer(out, len as i64),
            Ok(other) => return err(out, &format!("ERR unexpected answer {other:?}")),
            Err(e) => return failed(out, &e),
        },
        "strlen" => match map.get(arg(1)).await {
            Ok(v) => proto::integer(out, v.map_or(0, |v| v.len() as i64)),
            Err(e) => return failed(out, &e),
        },
        "mget" => {
            let keys: Vec<Vec<u8>> = cmd.args(buf).skip(1).map(<[u8]>::to_vec).collect();
            match map.get_all(&keys).await {
                Ok(found) => {
                    let found: AHashMap<&[u8], &[u8]> = found
                        .iter()
                        .map(|(k, v)| (k.as_slice(), v.as_slice()))
                        .collect();
                    proto::array(out, keys.len());
                    for key in &keys {
                        match found.get(key.as_slice()) {
                            Some(v) => proto::bulk(out, v),
                            None => proto::null(out, session.version),
                        }
                    }
                }
                Err(e) => return failed(out, &e),
            }
        }
        "mset" => {
            if cmd.len() % 2 == 0 {
                return err(out, "ERR wrong number of arguments for 'mset' command");
            }
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = (1..cmd.len())
                .step_by(2)
                .map(|i| (arg(i).to_vec(), arg(i + 1).to_vec()))
                .collect();
            if let Err(e) = map.put_all(&pairs).await {
                return failed(out, &e);
            }
            return ok(out);
        }
        "expire" | "pexpire" => {
            let Some(amount) = proto::parse_i64(arg(2)) else {
                return err(out, NOT_AN_INTEGER);
            };
            let millis = if name == "expire" {
                match amount.checked_mul(1000) {
                    Some(ms) => ms,
                    None => {
                        return err(out, &format!("ERR invalid expire time in '{name}' command"))
                    }
                }
            } else {
                amount
            };
            // A TTL that is already over deletes the key, as in Redis.
            let result = if millis <= 0 {
                map.delete(arg(1)).await
            } else {
                map.set_ttl(arg(1), Some(Duration::from_millis(millis as u64)))
                    .await
            };
            match result {
                Ok(done) => proto::integer(out, i64::from(done)),
                Err(e) => return failed(out, &e),
            }
        }
        "ttl" | "pttl" => match map.ttl(arg(1)).await {
            Ok(None) => proto::integer(out, -2),
            Ok(Some(None)) => proto::integer(out, -1),
            Ok(Some(Some(left))) => {
                let ms = left.as_millis().min(i64::MAX as u128) as i64;
                proto::integer(out, if name == "ttl" { (ms + 500) / 1000 } else { ms });
            }
            Err(e) => return failed(out, &e),
        },
        "persist" => {
            let had_ttl = match map.ttl(arg(1)).await {
                Ok(t) => matches!(t, Some(Some(_))),
                Err(e) => return failed(out, &e),
            };
            let persisted = had_ttl && matches!(map.set_ttl(arg(1), None).await, Ok(true));
            proto::integer(out, i64::from(persisted));
        }
        "dbsize" => match map.size().await {
            Ok(n) => proto::integer(out, n as i64),
            Err(e) => return failed(out, &e),
        },
        "flushdb" | "flushall" => {
            if let Some(mode) = cmd.get(buf, 1) {
                if !proto::eq_ignore_case(mode, "sync") && !proto::eq_ignore_case(mode, "async") {
                    return err(out, "ERR syntax error");
                }
            }
            if let Err(e) = map.clear().await {
                return failed(out, &e);
            }
            return ok(out);
        }
        "keys" => {
            let pattern = arg(1);
            match map.keys().await {
                Ok(keys) => {
                    let keys: Vec<_> = keys
                        .into_iter()
                        .filter(|k| pattern == b"*" || glob::matches(pattern, k, false))
                        .collect();
                    proto::array(out, keys.len());
                    for k in &keys {
                        proto::bulk(out, k);
                    }
                }
                Err(e) => return failed(out, &e),
            }
        }
        "scan" => return scan(door, cmd, buf, out).await,
        "ping" => {
            if session.subscribed() && session.version == Version::Resp2 {
                proto::array(out, 2);
                proto::bulk(out, b"pong");
                proto::bulk(out, cmd.get(buf, 1).unwrap_or(b""));
            } else if cmd.len() > 2 {
                return err(out, "ERR wrong number of arguments for 'ping' command");
            } else if let Some(message) = cmd.get(buf, 1) {
                proto::bulk(out, message);
            } else {
                proto::simple(out, "PONG");
            }
        }
        "echo" => proto::bulk(out, arg(1)),
        "select" => match proto::parse_i64(arg(1)) {
            Some(0) => return ok(out),
            Some(_) => return err(out, "ERR DB index is out of range"),
            None => return err(out, NOT_AN_INTEGER),
        },
        "info" => return info(door, session, cmd, buf, out).await,
        "client" => return client(door, session, cmd, buf, out),
        "command" => return command(cmd, buf, out),
        "config" => return config(session, cmd, buf, out),
        "quit" => {
            proto::simple(out, "OK");
            return Flow::Close;
        }
        "hello" => return hello(session, cmd, buf, out),
        "publish" => match door.topic(arg(1)).await {
            Ok(topic) => match topic.publish_counted(arg(2)).await {
                Ok(n) => proto::integer(out, n as i64),
                Err(e) => return failed(out, &e),
            },
            Err(e) => return failed(out, &e),
        },
        "subscribe" => return subscribe(door, session, cmd, buf, out).await,
        "unsubscribe" => return unsubscribe(session, cmd, buf, out),
        _ => return err(out, &format!("ERR unknown command '{name}'")),
    }
    Flow::Continue
}

/// SET key value [NX | XX] [GET] [EX seconds | PX milliseconds]
async fn set(map: &Map, session: &Session, cmd: &Command, buf: &[u8], out: &mut Vec<u8>) -> Flow {
    let (key, value) = (cmd.arg(buf, 1), cmd.arg(buf, 2));
    let mut if_exists = None;
    let mut get = false;
    let mut ttl: Option<Duration> = None;
    let mut i = 3;
    while i < cmd.len() {
        let option = cmd.arg(buf, i);
        let is = |name: &str| proto::eq_ignore_case(option, name);
        if is("nx") && if_exists.is_none() {
            if_exists = Some(false);
        } else if is("xx") && if_exists.is_none() {
            if_exists = Some(true);
        } else if is("get") {
            get = true;
        } else if (is("ex") || is("px")) && ttl.is_none() && i + 1 < cmd.len() {
            let Some(amount) = proto::parse_i64(cmd.arg(buf, i + 1)) else {
                return err(out, NOT_AN_INTEGER);
            };
            let millis = if is("ex") {
                amount.checked_mul(1000)
            } else {
                Some(amount)
            };
            match millis {
                Some(ms) if ms > 0 => ttl = Some(Duration::from_millis(ms as u64)),
                _ => return err(out, "ERR invalid expire time in 'set' command"),
            }
            i += 1;
        } else {
            return err(out, "ERR syntax error");
        }
        i += 1;
    }
    // Without EX or PX a Redis SET leaves no TTL; corecast's map then applies its own default
    // (`maps.NAME.ttl-secs`, none unless configured).
    match map.set_if(key, value, ttl, if_exists, get).await {
        Ok(Updated::Set(stored, old)) => {
            if get {
                match old {
                    Some(old) => proto::bulk(out, &old),
                    None => proto::null(out, session.version),
                }
            } else if stored {
                proto::simple(out, "OK");
            } else {
                proto::null(out, session.version);
            }
            Flow::Continue
        }
        Ok(other) => err(out, &format!("ERR unexpected answer {other:?}")),
        Err(e) => failed(out, &e),
    }
}

/// SCAN cursor [MATCH pattern] [COUNT count]: the cursor is the next partition to read, so a
/// key present for the whole scan is returned (once per partition it was in).
async fn scan(door: &Door, cmd: &Command, buf: &[u8], out: &mut Vec<u8>) -> Flow {
    let Some(cursor) = std::str::from_utf8(cmd.arg(buf, 1))
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return err(out, "ERR invalid cursor");
    };
    let mut pattern: Option<&[u8]> = None;
    let mut strings = true;
    let mut count = 10usize;
    let mut i = 2;
    while i < cmd.len() {
        let option = cmd.arg(buf, i);
        let Some(value) = cmd.get(buf, i + 1) else {
            return err(out, "ERR syntax error");
        };
        if proto::eq_ignore_case(option, "match") {
            pattern = Some(value).filter(|p| *p != b"*");
        } else if proto::eq_ignore_case(option, "count") {
            match proto::parse_i64(value) {
                Some(c) if c >= 1 => count = c as usize,
                Some(_) => return err(out, "ERR syntax error"),
                None => return err(out, NOT_AN_INTEGER),
            }
        } else if proto::eq_ignore_case(option, "type") {
            // Every key is a string here.
            strings = proto::eq_ignore_case(value, "string");
        } else {
            return err(out, "ERR syntax error");
        }
        i += 2;
    }
    let partitions = u64::from(door.invoker.partition_count().get());
    let mut next = cursor.min(partitions);
    let mut keys = Vec::new();
    while next < partitions && keys.len() < count {
        match door.map.keys_in(PartitionId(next as u32)).await {
            Ok(found) => keys.extend(
                found
                    .into_iter()
                    .filter(|k| strings && pattern.is_none_or(|p| glob::matches(p, k, false))),
            ),
            Err(e) => return failed(out, &e),
        }
        next += 1;
    }
    let next = if next >= partitions { 0 } else { next };
    proto::array(out, 2);
    proto::bulk(out, next.to_string().as_bytes());
    proto::array(out, keys.len());
    for k in &keys {
        proto::bulk(out, k);
    }
    Flow::Continue
}

async fn info(
    door: &Door,
    session: &Session,
    cmd: &Command,
    buf: &[u8],
    out: &mut Vec<u8>,
) -> Flow {
    let section = cmd
        .get(buf, 1)
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .unwrap_or_else(|| "default".to_owned());
    let all = matches!(section.as_str(), "default" | "all" | "everything");
    let mut text = String::new();
    if all || section == "server" {
        text.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\ncorecast_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            door.port,
            door.started.elapsed().as_secs(),
        ));
    }
    if all || section == "clients" {
        text.push_str(&format!(
            "# Clients\r\nconnected_clients:{}\r\n",
            door.clients.get()
        ));
    }
    if all || section == "keyspace" {
        let keys = match door.map.size().await {
            Ok(n) => n,
            Err(e) => return failed(out, &e),
        };
        text.push_str("# Keyspace\r\n");
        if keys > 0 {
            text.push_str(&format!("db0:keys={keys},expires=0,avg_ttl=0\r\n"));
        }
    }
    proto::verbatim(out, session.version, b"txt", text.as_bytes());
    Flow::Continue
}

fn client(
    door: &Door,
    session: &mut Session,
    cmd: &Command,
    buf: &[u8],
    out: &mut Vec<u8>,
) -> Flow {
    let sub = String::from_utf8_lossy(cmd.arg(buf, 1)).to_ascii_lowercase();
    match (sub.as_str(), cmd.len()) {
        ("setname", 3) => {
            let name = cmd.arg(buf, 2);
            if name.iter().any(|&b| b <= b' ' || b > b'~') {
                return err(
                    out,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            session.name = (!name.is_empty()).then(|| name.to_vec());
            ok(out)
        }
        ("getname", 2) => {
            match &session.name {
                Some(n) => proto::bulk(out, n),
                None => proto::null(out, session.version),
            }
            Flow::Continue
        }
        ("id", 2) => {
            proto::integer(out, session.id as i64);
            Flow::Continue
        }
        ("setinfo", 4) => ok(out),
        ("info", 2) => {
            let line = format!(
                "id={} name={} db=0 resp={} port={}\n",
                session.id,
                String::from_utf8_lossy(session.name.as_deref().unwrap_or(b"")),
                if session.version == Version::Resp3 {
                    3
                } else {
                    2
                },
                door.port
            );
            proto::verbatim(out, session.version, b"txt", line.as_bytes());
            Flow::Continue
        }
        ("setname" | "getname" | "id" | "setinfo" | "info", _) => err(
            out,
            &format!("ERR wrong number of arguments for 'client|{sub}' command"),
        ),
        _ => err(
            out,
            &format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(cmd.arg(buf, 1))
            ),
        ),
    }
}

fn command_info(out: &mut Vec<u8>, name: &str, arity: i64, flags: &[&str]) {
    let (first, last, step) = key_spec(name);
    proto::array(out, 6);
    proto::bulk(out, name.as_bytes());
    proto::integer(out, arity);
    proto::array(out, flags.len());
    for f in flags {
        proto::simple(out, f);
    }
    proto::integer(out, first);
    proto::integer(out, last);
    proto::integer(out, step);
}

/// COMMAND, COMMAND COUNT, COMMAND INFO name…, COMMAND DOCS (empty: redis-cli then uses its own
/// help).
fn command(cmd: &Command, buf: &[u8], out: &mut Vec<u8>) -> Flow {
    let Some(sub) = cmd.get(buf, 1) else {
        proto::array(out, COMMANDS.len());
        for (name, arity, flags) in COMMANDS {
            command_info(out, name, *arity, flags);
        }
        return Flow::Continue;
    };
    if proto::eq_ignore_case(sub, "count") {
        proto::integer(out, COMMANDS.len() as i64);
    } else if proto::eq_ignore_case(sub, "docs") {
        proto::array(out, 0);
    } else if proto::eq_ignore_case(sub, "info") {
        proto::array(out, cmd.len() - 2);
        for wanted in cmd.args(buf).skip(2) {
            let wanted = String::from_utf8_lossy(wanted).to_ascii_lowercase();
            match COMMANDS.iter().find(|(n, _, _)| *n == wanted) {
                Some((name, arity, flags)) => command_info(out, name, *arity, flags),
                None => proto::null_array(out, Version::Resp2),
            }
        }
    } else {
        return err(
            out,
            &format!(
                "ERR unknown subcommand '{}'. Try COMMAND HELP.",
                String::from_utf8_lossy(sub)
            ),
        );
    }
    Flow::Continue
}

/// The parameters CONFIG GET shows (what tools such as redis-benchmark ask for).
const PARAMETERS: &[(&str, &str)] = &[
    ("save", ""),
    ("appendonly", "no"),
    ("databases", "1"),
    ("maxmemory", "0"),
];

/// CONFIG GET pattern…, CONFIG RESETSTAT; corecast's own settings live in its TOML config.
fn config(session: &Session, cmd: &Command, buf: &[u8], out: &mut Vec<u8>) -> Flow {
    let sub = cmd.arg(buf, 1);
    if proto::eq_ignore_case(sub, "get") && cmd.len() >= 3 {
        let found: Vec<&(&str, &str)> = PARAMETERS
            .iter()
            .filter(|(name, _)| {
                cmd.args(buf)
                    .skip(2)
                    .any(|p| glob::matches(p, name.as_bytes(), true))
            })
            .collect();
        proto::map(out, session.version, found.len());
        for (name, value) in found {
            proto::bulk(out, name.as_bytes());
            proto::bulk(out, value.as_bytes());
        }
        Flow::Continue
    } else if proto::eq_ignore_case(sub, "resetstat") && cmd.len() == 2 {
        ok(out)
    } else if proto::eq_ignore_case(sub, "set") {
        err(
            out,
            "ERR CONFIG SET is not supported: corecast's settings are in its TOML config",
        )
    } else {
        err(
            out,
            &format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
                String::from_utf8_lossy(sub)
            ),
        )
    }
}

/// HELLO [protover [AUTH username password] [SETNAME clientname]]
fn hello(session: &mut Session, cmd: &Command, buf: &[u8], out: &mut Vec<u8>) -> Flow {
    let mut version = session.version;
    if let Some(v) = cmd.get(buf, 1) {
        version = match proto::parse_i64(v) {
            Some(2) => Version::Resp2,
            Some(3) => Version::Resp3,
            Some(_) => return err(out, "NOPROTO unsupported protocol version"),
            None => {
                return err(
                    out,
                    "ERR Protocol version is not an integer or out of range",
                )
            }
        };
    }
    let mut i = 2;
    let mut name = None;
    while i < cmd.len() {
        let option = cmd.arg(buf, i);
        if proto::eq_ignore_case(option, "auth") && i + 2 < cmd.len() {
            // No users or passwords here: the default user, as a Redis without requirepass.
            i += 3;
        } else if proto::eq_ignore_case(option, "setname") && i + 1 < cmd.len() {
            name = Some(cmd.arg(buf, i + 1).to_vec());
            i += 2;
        } else {
            return err(
                out,
                &format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                ),
            );
        }
    }
    session.version = version;
    if name.is_some() {
        session.name = name;
    }
    proto::map(out, version, 7);
    proto::bulk(out, b"server");
    proto::bulk(out, b"redis");
    proto::bulk(out, b"version");
    proto::bulk(out, REDIS_VERSION.as_bytes());
    proto::bulk(out, b"proto");
    proto::integer(out, if version == Version::Resp3 { 3 } else { 2 });
    proto::bulk(out, b"id");
    proto::integer(out, session.id as i64);
    proto::bulk(out, b"mode");
    proto::bulk(out, b"standalone");
    proto::bulk(out, b"role");
    proto::bulk(out, b"master");
    proto::bulk(out, b"modules");
    proto::array(out, 0);
    Flow::Continue
}

fn subscription_reply(
    out: &mut Vec<u8>,
    version: Version,
    kind: &[u8],
    channel: Option<&[u8]>,
    n: usize,
) {
    proto::push(out, version, 3);
    proto::bulk(out, kind);
    match channel {
        Some(c) => proto::bulk(out, c),
        None => proto::null(out, version),
    }
    proto::integer(out, n as i64);
}

async fn subscribe(
    door: &Door,
    session: &mut Session,
    cmd: &Command,
    buf: &[u8],
    out: &mut Vec<u8>,
) -> Flow {
    for channel in cmd.args(buf).skip(1) {
        if !session.subscriptions.contains_key(channel) {
            let subscription = match door.topic(channel).await {
                Ok(topic) => topic.subscribe().await,
                Err(e) => Err(e),
            };
            let subscription = match subscription {
                Ok(s) => s,
                Err(e) => return failed(out, &e),
            };
            let tx = session.deliveries.0.clone();
            let name = channel.to_vec();
            let task = glommio::spawn_local(async move {
                while let Some(message) = subscription.next().await {
                    // A connection that does not read its messages loses the newest ones
                    // rather than the member's memory.
                    if let Err(flume::TrySendError::Disconnected(_)) =
                        tx.try_send((name.clone(), message.payload))
                    {
                        break;
                    }
                }
            })
            .detach();
            session.subscriptions.insert(channel.to_vec(), task);
        }
        subscription_reply(
            out,
            session.version,
            b"subscribe",
            Some(channel),
            session.subscriptions.len(),
        );
    }
    Flow::Continue
}

fn unsubscribe(session: &mut Session, cmd: &Command, buf: &[u8], out: &mut Vec<u8>) -> Flow {
    let channels: Vec<Vec<u8>> = if cmd.len() > 1 {
        cmd.args(buf).skip(1).map(<[u8]>::to_vec).collect()
    } else {
        session.subscriptions.keys().cloned().collect()
    };
    if channels.is_empty() {
        subscription_reply(out, session.version, b"unsubscribe", None, 0);
    }
    for channel in channels {
        if let Some(task) = session.subscriptions.remove(&channel) {
            task.cancel();
        }
        subscription_reply(
            out,
            session.version,
            b"unsubscribe",
            Some(&channel),
            session.subscriptions.len(),
        );
    }
    Flow::Continue
}
