//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz targets'
//! bodies on stable, so every input that ever found a bug is run by CI without a nightly
//! toolchain or libFuzzer. `CORECAST_WRITE_SEEDS=1` (re)writes the generated frame seeds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use corecast_engine::payload::encode as archive;
use corecast_net::frame::{encode, FrameKind, Header};
use corecast_net::wire::Control;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs `body` on every file of the target's corpus; how many there were.
fn replay(target: &str, body: fn(&[u8])) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus(target)).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| body(&data));
        assert!(result.is_ok(), "{target}: {} panicked", path.display());
        n += 1;
    }
    n
}

/// Valid frames, whole and cut short, behind a chunk-size byte: where the frame fuzzer starts.
fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let control = archive(&Control::Subscribe).unwrap();
    for (name, kind, payload) in [
        ("request", FrameKind::Request, b"payload bytes".to_vec()),
        ("control-subscribe", FrameKind::Control, control.to_vec()),
        ("response-empty", FrameKind::Response, Vec::new()),
    ] {
        let mut out = rkyv::util::AlignedVec::<16>::new();
        let header = Header {
            correlation: 7,
            partition: 3,
            service: 18,
            op: 2,
            ..Header::new(kind)
        };
        encode(&mut out, &header, &payload, 1 << 16).unwrap();
        for chunk in [1u8, 7, 63] {
            let mut whole = vec![chunk];
            whole.extend_from_slice(&out);
            whole.extend_from_slice(&out);
            seeds.push((format!("{name}-x2-chunk{chunk}"), whole.clone()));
            whole.truncate(whole.len() - 5);
            seeds.push((format!("{name}-cut-chunk{chunk}"), whole));
        }
    }
    seeds
}

#[test]
fn the_fuzz_corpus_replays_through_every_target() {
    let seeds = frame_seeds();
    if std::env::var_os("CORECAST_WRITE_SEEDS").is_some() {
        for (name, bytes) in &seeds {
            std::fs::write(corpus("frames").join(name), bytes).unwrap();
        }
    }
    for (_, bytes) in &seeds {
        corecast_net::fuzz::frames(bytes);
    }
    let counts = [
        replay("frames", corecast_net::fuzz::frames),
        replay("config", corecast_engine::fuzz::config),
        replay("resp", corecast_services::resp::fuzz::requests),
    ];
    assert!(counts.iter().all(|&n| n > 0), "an empty corpus: {counts:?}");
}
