//! The Redis front door: a Redis client library against a 3-member in-process cluster (every
//! command, keys spread over all members, TTL expiry, pub/sub, errors and protocol abuse), and
//! against member processes: keys written through RESP survive `kill -9` of a member
//! (backup-count 1), and redis-cli talks to a member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use corecast_engine::{BlockingMember, Member};
use corecast_services::builtin::with_builtin_services;
use corecast_services::resp::proto::{parse_value, Value};
use redis::{Commands, RedisResult};
use support::procs::{self, joined, settled, wait_for, Proc};

/// An in-process member with the front door on one shard: the member and its RESP address.
fn start(seeds: &[&BlockingMember]) -> (BlockingMember, SocketAddr) {
    let mut config = support::networked_config(seeds, 1);
    config.network.resp_port = procs::free_ports(1);
    let builder = with_builtin_services(Member::builder(config.clone()));
    let member = futures_lite::future::block_on(corecast_net::start_member(builder)).unwrap();
    let addrs =
        futures_lite::future::block_on(corecast_services::resp::start(member.invoker(), &config))
            .unwrap();
    assert_eq!(addrs.len(), 1);
    (BlockingMember::from(member), addrs[0])
}

fn connect(addr: SocketAddr) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let con = client.get_connection().unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con
}

fn cmd<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> RedisResult<T> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

/// Sends raw bytes on a fresh connection and reads replies until `n` whole values came (or
/// the connection closed); returns them and whether it closed.
fn raw(addr: SocketAddr, bytes: &[u8], n: usize) -> (Vec<Value>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let mut values = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some((v, used)) = parse_value(&buf).unwrap() {
            values.push(v);
            buf.drain(..used);
        }
        if values.len() >= n {
            return (values, false);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return (values, true),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

fn error_text(v: &Value) -> String {
    match v {
        Value::Error(e) => String::from_utf8_lossy(e).into_owned(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn every_command_through_a_redis_client_on_a_three_member_cluster() {
    let (a, addr_a) = start(&[]);
    let (b, addr_b) = start(&[&a]);
    let (c, addr_c) = start(&[&a]);
    support::quiet(&[&a, &b, &c]);
    let mut con = connect(addr_a);

    // Keys written through one member land on every member, and read back through the others.
    for i in 0..300 {
        let () = con.set(format!("k{i}"), format!("v{i}")).unwrap();
    }
    let table = support::network(&a).table().unwrap();
    let owners: BTreeSet<u64> = (0..300)
        .map(|i| {
            let p = a
                .member()
                .invoker()
                .partition_of(format!("k{i}").as_bytes());
            table.owner(p).unwrap().0
        })
        .collect();
    let ids: BTreeSet<u64> = [&a, &b, &c]
        .iter()
        .map(|m| support::network(m).id().0)
        .collect();
    assert_eq!(owners, ids, "the keys are spread over all three members");
    for addr in [addr_b, addr_c] {
        let mut other = connect(addr);
        for i in (0..300).step_by(7) {
            let v: String = other.get(format!("k{i}")).unwrap();
            assert_eq!(v, format!("v{i}"));
        }
    }
    let n: i64 = cmd(&mut con, &["DBSIZE"]).unwrap();
    assert_eq!(n, 300);

    // GET / SET and its options.
    let none: Option<String> = con.get("missing").unwrap();
    assert_eq!(none, None);
    let r: Option<String> = cmd(&mut con, &["SET", "s", "1", "NX"]).unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    let r: Option<String> = cmd(&mut con, &["SET", "s", "2", "NX"]).unwrap();
    assert_eq!(r, None, "NX over a live key");
    let r: Option<String> = cmd(&mut con, &["SET", "nope", "2", "XX"]).unwrap();
    assert_eq!(r, None, "XX over no key");
    let r: Option<String> = cmd(&mut con, &["SET", "s", "3", "XX", "GET"]).unwrap();
    assert_eq!(r.as_deref(), Some("1"));
    let r: Option<String> = cmd(&mut con, &["GETDEL", "s"]).unwrap();
    assert_eq!(r.as_deref(), Some("3"));
    assert!(!con.exists::<_, bool>("s").unwrap());
    let e = cmd::<String>(&mut con, &["SET", "s", "1", "EX", "0"]).unwrap_err();
    assert!(e.to_string().contains("invalid expire time"), "{e}");
    let e = cmd::<String>(&mut con, &["SET", "s", "1", "NX", "XX"]).unwrap_err();
    assert!(e.to_string().contains("syntax error"), "{e}");

    // DEL and EXISTS over several keys (on several members).
    let n: i64 = cmd(&mut con, &["EXISTS", "k1", "k2", "missing", "k1"]).unwrap();
    assert_eq!(n, 3, "EXISTS counts a repeated key twice");
    let n: i64 = cmd(&mut con, &["DEL", "k1", "k2", "missing"]).unwrap();
    assert_eq!(n, 2);

    // Counters and strings.
    assert_eq!(cmd::<i64>(&mut con, &["INCR", "n"]).unwrap(), 1);
    assert_eq!(cmd::<i64>(&mut con, &["INCRBY", "n", "41"]).unwrap(), 42);
    assert_eq!(cmd::<i64>(&mut con, &["DECR", "n"]).unwrap(), 41);
    assert_eq!(cmd::<i64>(&mut con, &["DECRBY", "n", "50"]).unwrap(), -9);
    let e = cmd::<i64>(&mut con, &["INCR", "k3"]).unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");
    let e = cmd::<i64>(&mut con, &["INCRBY", "n", "x"]).unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");
    let () = con.set("big", i64::MAX).unwrap();
    let e = cmd::<i64>(&mut con, &["INCR", "big"]).unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
    assert_eq!(cmd::<i64>(&mut con, &["APPEND", "str", "abc"]).unwrap(), 3);
    assert_eq!(cmd::<i64>(&mut con, &["APPEND", "str", "de"]).unwrap(), 5);
    assert_eq!(cmd::<i64>(&mut con, &["STRLEN", "str"]).unwrap(), 5);
    assert_eq!(cmd::<i64>(&mut con, &["STRLEN", "missing"]).unwrap(), 0);

    // MGET / MSET across members.
    let () = cmd(&mut con, &["MSET", "m1", "a", "m2", "b", "m3", "c"]).unwrap();
    let got: Vec<Option<String>> = cmd(&mut con, &["MGET", "m1", "missing", "m3", "m2"]).unwrap();
    assert_eq!(
        got,
        vec![Some("a".into()), None, Some("c".into()), Some("b".into())]
    );
    let e = cmd::<String>(&mut con, &["MSET", "m1", "a", "m2"]).unwrap_err();
    assert!(e.to_string().contains("wrong number of arguments"), "{e}");

    // TTLs: EXPIRE, PEXPIRE, TTL, PTTL, PERSIST, and expiry itself.
    assert_eq!(cmd::<i64>(&mut con, &["TTL", "m1"]).unwrap(), -1);
    assert_eq!(cmd::<i64>(&mut con, &["TTL", "missing"]).unwrap(), -2);
    assert_eq!(cmd::<i64>(&mut con, &["EXPIRE", "m1", "100"]).unwrap(), 1);
    assert_eq!(
        cmd::<i64>(&mut con, &["EXPIRE", "missing", "100"]).unwrap(),
        0
    );
    let ttl: i64 = cmd(&mut con, &["TTL", "m1"]).unwrap();
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    let pttl: i64 = cmd(&mut con, &["PTTL", "m1"]).unwrap();
    assert!((90_000..=100_000).contains(&pttl), "pttl {pttl}");
    assert_eq!(cmd::<i64>(&mut con, &["PERSIST", "m1"]).unwrap(), 1);
    assert_eq!(cmd::<i64>(&mut con, &["PERSIST", "m1"]).unwrap(), 0);
    assert_eq!(cmd::<i64>(&mut con, &["TTL", "m1"]).unwrap(), -1);
    let () = cmd(&mut con, &["SET", "short", "x", "PX", "300"]).unwrap();
    assert_eq!(cmd::<i64>(&mut con, &["PEXPIRE", "m2", "300"]).unwrap(), 1);
    assert_eq!(cmd::<i64>(&mut con, &["EXPIRE", "m3", "-1"]).unwrap(), 1);
    assert!(!con.exists::<_, bool>("m3").unwrap(), "a past TTL deletes");
    sleep(Duration::from_millis(700));
    let gone: Vec<Option<String>> = cmd(&mut con, &["MGET", "short", "m2"]).unwrap();
    assert_eq!(gone, vec![None, None], "both expired");
    let ttl: i64 = cmd(&mut con, &["TTL", "short"]).unwrap();
    assert_eq!(ttl, -2);

    // KEYS and SCAN see the same keys.
    let mut keys: Vec<String> = cmd(&mut con, &["KEYS", "k1*"]).unwrap();
    keys.sort();
    let mut want: Vec<String> = (0..300)
        .map(|i| format!("k{i}"))
        .filter(|k| k.starts_with("k1") && k != "k1")
        .collect();
    want.sort();
    assert_eq!(keys, want);
    let mut scanned = BTreeSet::new();
    let mut cursor = "0".to_owned();
    let mut rounds = 0;
    loop {
        let (next, batch): (String, Vec<String>) =
            cmd(&mut con, &["SCAN", &cursor, "MATCH", "k*", "COUNT", "50"]).unwrap();
        scanned.extend(batch);
        rounds += 1;
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert!(rounds > 1, "a cursor that moves");
    let all_k: BTreeSet<String> = (0..300)
        .filter(|i| ![1, 2].contains(i))
        .map(|i| format!("k{i}"))
        .collect();
    assert_eq!(scanned, all_k);

    // Connection commands.
    assert_eq!(cmd::<String>(&mut con, &["PING"]).unwrap(), "PONG");
    assert_eq!(cmd::<String>(&mut con, &["PING", "hey"]).unwrap(), "hey");
    assert_eq!(cmd::<String>(&mut con, &["ECHO", "hi"]).unwrap(), "hi");
    assert_eq!(cmd::<String>(&mut con, &["SELECT", "0"]).unwrap(), "OK");
    let e = cmd::<String>(&mut con, &["SELECT", "1"]).unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
    let info: String = cmd(&mut con, &["INFO"]).unwrap();
    for needle in [
        "# Server",
        "redis_version:",
        "# Clients",
        "connected_clients:",
        "# Keyspace",
        "db0:keys=",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle}: {info}");
    }
    let info: String = cmd(&mut con, &["INFO", "keyspace"]).unwrap();
    assert!(!info.contains("# Server"));
    assert_eq!(
        cmd::<String>(&mut con, &["CLIENT", "SETNAME", "tester"]).unwrap(),
        "OK"
    );
    assert_eq!(
        cmd::<String>(&mut con, &["CLIENT", "GETNAME"]).unwrap(),
        "tester"
    );
    let id: i64 = cmd(&mut con, &["CLIENT", "ID"]).unwrap();
    assert!(id > 0);
    let count: i64 = cmd(&mut con, &["COMMAND", "COUNT"]).unwrap();
    assert!(count >= 30);
    let all: Vec<redis::Value> = cmd(&mut con, &["COMMAND"]).unwrap();
    assert_eq!(all.len() as i64, count);

    // Errors keep the connection working.
    let e = cmd::<String>(&mut con, &["GET"]).unwrap_err();
    assert!(
        e.to_string()
            .contains("wrong number of arguments for 'get'"),
        "{e}"
    );
    let e = cmd::<String>(&mut con, &["NOSUCH", "x"]).unwrap_err();
    assert!(e.to_string().contains("unknown command 'NOSUCH'"), "{e}");
    assert_eq!(cmd::<String>(&mut con, &["PING"]).unwrap(), "PONG");

    // Pub/sub over topics: a subscriber on another member gets what one publishes here.
    let mut sub_con = connect(addr_b);
    let mut pubsub = sub_con.as_pubsub();
    pubsub.subscribe("news").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reached = 0;
    for _ in 0..50 {
        reached = cmd::<i64>(&mut con, &["PUBLISH", "news", "hello"]).unwrap();
        if reached >= 1 {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert_eq!(reached, 1, "one subscription reached");
    let message = pubsub.get_message().unwrap();
    assert_eq!(message.get_channel_name(), "news");
    assert_eq!(message.get_payload::<String>().unwrap(), "hello");
    drop(pubsub);

    // FLUSHDB empties the map everywhere; QUIT says OK and closes.
    assert_eq!(cmd::<String>(&mut con, &["FLUSHDB"]).unwrap(), "OK");
    assert_eq!(cmd::<i64>(&mut con, &["DBSIZE"]).unwrap(), 0);
    let (replies, closed) = raw(addr_c, b"QUIT\r\n", 1);
    assert_eq!(replies, vec![Value::Simple(b"OK".to_vec())]);
    let _ = closed;

    drop(sub_con);
    c.shutdown();
    b.shutdown();
    a.shutdown();
}

#[test]
fn resp3_inline_commands_and_bad_input() {
    let (m, addr) = start(&[]);
    // HELLO 3 switches to RESP3: a map, then RESP3 nulls.
    let (replies, _) = raw(addr, b"HELLO 3\r\nGET missing\r\nPING\r\n", 3);
    match &replies[0] {
        Value::Map(pairs) => {
            let proto = pairs
                .iter()
                .find(|(k, _)| *k == Value::Bulk(Some(b"proto".to_vec())))
                .map(|(_, v)| v.clone());
            assert_eq!(proto, Some(Value::Integer(3)));
        }
        other => panic!("HELLO 3 answered {other:?}"),
    }
    assert_eq!(replies[1], Value::Null);
    assert_eq!(replies[2], Value::Simple(b"PONG".to_vec()));
    let (replies, _) = raw(addr, b"HELLO 4\r\n", 1);
    assert!(error_text(&replies[0]).starts_with("NOPROTO"));

    // Inline commands with quotes, pipelined with multibulk ones.
    let (replies, _) = raw(
        addr,
        b"SET greeting \"hello world\"\r\n*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\nECHO 'it''s'\r\n",
        3,
    );
    assert_eq!(replies[0], Value::Simple(b"OK".to_vec()));
    assert_eq!(replies[1], Value::Bulk(Some(b"hello world".to_vec())));

    // A protocol error is answered, and the connection closed; the member keeps serving.
    let (replies, closed) = raw(addr, b"*1\r\n$99999999999\r\n", 2);
    assert!(
        error_text(&replies[0]).contains("Protocol error"),
        "{replies:?}"
    );
    assert!(closed, "the connection closed after a protocol error");
    let (replies, closed) = raw(addr, b"*2\r\nx\r\n", 2);
    assert!(
        error_text(&replies[0]).contains("expected '$'"),
        "{replies:?}"
    );
    assert!(closed);
    let (replies, _) = raw(addr, b"\"unbalanced\r\n", 2);
    assert!(
        error_text(&replies[0]).contains("unbalanced quotes"),
        "{replies:?}"
    );
    // An oversized value (past network.max-frame-kib) is refused.
    let max = 16 * 1024 * 1024 + 1;
    let big = format!("*3\r\n$3\r\nSET\r\n$1\r\nb\r\n${max}\r\n");
    let (replies, closed) = raw(addr, big.as_bytes(), 2);
    assert!(
        error_text(&replies[0]).contains("invalid bulk length"),
        "{replies:?}"
    );
    assert!(closed);
    // Wrong arity and unknown commands do not close it.
    let (replies, closed) = raw(addr, b"GET\r\nFOO bar\r\nGET greeting\r\n", 3);
    assert!(error_text(&replies[0]).contains("wrong number of arguments"));
    assert!(error_text(&replies[1]).contains("unknown command 'FOO'"));
    assert_eq!(replies[2], Value::Bulk(Some(b"hello world".to_vec())));
    assert!(!closed);
    let mut con = connect(addr);
    assert_eq!(
        cmd::<String>(&mut con, &["GET", "greeting"]).unwrap(),
        "hello world"
    );
    m.shutdown();
}

fn resp_member(seeds: &[&Proc]) -> (Proc, u16) {
    let resp = procs::free_ports(2);
    let port = resp.to_string();
    let p = procs::member(
        seeds,
        &["--resp-port", &port, "--set", "backups.backup-count=1"],
    );
    wait_for("a member", Duration::from_secs(20), || joined(&p));
    (p, resp)
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (scripts/test.sh installs redis-tools)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

#[test]
fn resp_keys_survive_a_killed_member_and_redis_cli_talks_to_a_member() {
    let (first, port_a) = resp_member(&[]);
    let (second, port_b) = resp_member(&[&first]);
    let (mut third, _) = resp_member(&[&first]);
    let mut members = vec![first, second];
    wait_for("a settled cluster", Duration::from_secs(60), || {
        settled(&members[0], 3)
    });

    // redis-cli, as a user would run it.
    assert_eq!(redis_cli(port_a, &["PING"]), "PONG");
    assert_eq!(redis_cli(port_a, &["SET", "cli", "hello"]), "OK");
    assert_eq!(redis_cli(port_b, &["GET", "cli"]), "hello");
    assert_eq!(redis_cli(port_a, &["INCR", "cli-n"]), "1");
    assert_eq!(redis_cli(port_a, &["EXISTS", "cli", "cli-n"]), "2");
    assert!(redis_cli(port_a, &["INFO", "server"]).contains("redis_version"));

    // 1,000 keys through shard 1 of the first member, then kill -9 of the third.
    let mut con = connect(SocketAddr::from(([127, 0, 0, 1], port_a + 1)));
    for i in 0..1000 {
        let () = con.set(format!("key-{i}"), format!("value-{i}")).unwrap();
    }
    third.kill9();
    wait_for("the kill noticed", Duration::from_secs(30), || {
        procs::status(&members[0]).len() == 2
    });
    let mut con = connect(SocketAddr::from(([127, 0, 0, 1], port_b)));
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i}")).collect();
    let mut values: Vec<Option<String>> = Vec::new();
    for chunk in keys.chunks(100) {
        let mut mget = redis::cmd("MGET");
        for k in chunk {
            mget.arg(k);
        }
        values.extend(mget.query::<Vec<Option<String>>>(&mut con).unwrap());
    }
    let missing: Vec<usize> = (0..1000)
        .filter(|&i| values[i].as_deref() != Some(format!("value-{i}").as_str()))
        .collect();
    assert!(missing.is_empty(), "keys lost after the kill: {missing:?}");
    assert_eq!(cmd::<i64>(&mut con, &["DBSIZE"]).unwrap(), 1002);
    members.clear();
}
