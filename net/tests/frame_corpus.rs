//! Replays the checked-in corpus of frames: every malformed file is an error, never a panic;
//! every valid file decodes completely.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use corecast_net::frame::{FrameError, ReadBuf};

const MAX: usize = 1 << 20;

/// Read sizes each file is replayed with: byte by byte, odd sizes, whole at once.
const READS: [usize; 4] = [1, 7, 37, 4096];

/// Feeds `bytes` through a receive buffer (in `read`-byte reads) until an error or the end.
fn replay(bytes: &[u8], read: usize) -> Result<usize, FrameError> {
    let mut rb = ReadBuf::new(MAX);
    let mut frames = 0;
    for chunk in bytes.chunks(read) {
        let spare = rb.spare();
        spare[..chunk.len()].copy_from_slice(chunk);
        rb.filled(chunk.len());
        while rb.next_frame()?.is_some() {
            frames += 1;
        }
    }
    rb.finish()?;
    Ok(frames)
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_malformed_frame_is_an_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/frames");
    let files = files(&dir);
    assert!(files.len() >= 12, "the corpus is checked in");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for read in READS {
            let result = replay(&bytes, read);
            assert!(
                result.is_err(),
                "{} decoded in {read}-byte reads: {result:?}",
                file.display()
            );
        }
    }
}

#[test]
fn every_valid_file_decodes_completely() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/frames/valid");
    for read in READS {
        let counts: Vec<usize> = files(&dir)
            .iter()
            .map(|f| replay(&std::fs::read(f).unwrap(), read).unwrap())
            .collect();
        assert_eq!(counts, vec![1, 3], "in {read}-byte reads");
    }
}
