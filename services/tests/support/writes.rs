//! Writers for the kill and migration tests: threads writing through a smart client while
//! members come and go, a ledger of what was attempted and acknowledged, and the check that
//! every acknowledged write is there and no counter was applied twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use corecast_engine::BlockingMember;
use corecast_services::counter::Counter;
use corecast_services::kv::KvStore;

use super::procs::Proc;

/// A smart client connected through `via`.
pub fn client(via: &Proc) -> BlockingMember {
    super::client_of(&via.addr)
}

/// What the writers did: per counter, increments attempted and acknowledged; keys put and
/// acknowledged.
#[derive(Default)]
pub struct Ledger {
    pub attempted: BTreeMap<String, i64>,
    pub acked: BTreeMap<String, i64>,
    pub keys: Vec<String>,
    pub errors: usize,
    /// The longest any single call took: after a kill, the failover time of the calls that hit
    /// the dead member's partitions.
    pub longest: Duration,
}

/// A small deterministic generator (xorshift), seeded per cycle.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `writers` threads write through `client` until `stop`: each increments counters and puts
/// unique keys, recording acknowledgements in the ledger.
pub fn start_writers(
    client: &Arc<BlockingMember>,
    writers: usize,
    counters: usize,
    stop: &Arc<AtomicBool>,
    ledger: &Arc<Mutex<Ledger>>,
) -> Vec<thread::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (client, stop, ledger) = (client.clone(), stop.clone(), ledger.clone());
            thread::spawn(move || {
                let store: KvStore = client.object("acked").unwrap();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let name = format!("c{}", (w + seq as usize) % counters);
                    let counter: Counter = client.object(&name).unwrap();
                    *ledger
                        .lock()
                        .unwrap()
                        .attempted
                        .entry(name.clone())
                        .or_default() += 1;
                    let started = Instant::now();
                    let result = client.block_on(counter.inc(1));
                    {
                        let mut l = ledger.lock().unwrap();
                        l.longest = l.longest.max(started.elapsed());
                    }
                    match result {
                        Ok(_) => *ledger.lock().unwrap().acked.entry(name).or_default() += 1,
                        Err(_) => ledger.lock().unwrap().errors += 1,
                    }
                    let key = format!("w{w}-{seq}");
                    let started = Instant::now();
                    let result = client.block_on(store.put(key.as_bytes(), key.as_bytes()));
                    {
                        let mut l = ledger.lock().unwrap();
                        l.longest = l.longest.max(started.elapsed());
                    }
                    match result {
                        Ok(()) => ledger.lock().unwrap().keys.push(key),
                        Err(_) => ledger.lock().unwrap().errors += 1,
                    }
                }
            })
        })
        .collect()
}

/// Every acknowledged increment and put is there; no counter is past what was attempted.
pub fn check(client: &BlockingMember, ledger: &Ledger, what: &str) {
    for (name, attempted) in &ledger.attempted {
        let counter: Counter = client.object(name).unwrap();
        let value = client.block_on(counter.inc(0)).unwrap();
        let acked = ledger.acked.get(name).copied().unwrap_or(0);
        assert!(
            value >= acked && value <= *attempted,
            "{what}: counter {name} is {value}, acknowledged {acked}, attempted {attempted}"
        );
    }
    let store: KvStore = client.object("acked").unwrap();
    for key in &ledger.keys {
        let got = client.block_on(store.get(key.as_bytes())).unwrap();
        assert_eq!(
            got.as_deref(),
            Some(key.as_bytes()),
            "{what}: acknowledged put {key}"
        );
    }
}

/// Writers running until [`Writes::finish`].
pub struct Writes {
    pub client: Arc<BlockingMember>,
    pub ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Writes {
    /// `writers` threads writing through a client of `via`, over `counters` counters.
    pub fn start(via: &Proc, writers: usize, counters: usize) -> Writes {
        let client = Arc::new(client(via));
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let threads = start_writers(&client, writers, counters, &stop, &ledger);
        Writes {
            client,
            ledger,
            stop,
            threads,
        }
    }

    /// Stops the writers and checks every acknowledged write; returns the ledger's counts
    /// (keys, counters, errors, longest call).
    pub fn finish(self, what: &str) -> (usize, usize, usize, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let ledger = self.ledger.lock().unwrap();
        assert!(!ledger.keys.is_empty(), "{what}: nothing was written");
        check(&self.client, &ledger, what);
        (
            ledger.keys.len(),
            ledger.attempted.len(),
            ledger.errors,
            ledger.longest,
        )
    }
}
