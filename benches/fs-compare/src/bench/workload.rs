//! The workloads both harnesses run: a tar of 10k small files to extract and a 256 MiB file
//! to read, made once per work directory.

use std::{
    fs::{self, File},
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use super::other;

/// Files in the untar workload.
pub const SMALL_FILES: usize = 10_000;
/// Directories they are spread over.
pub const SMALL_DIRS: usize = 100;
/// Size of the sequential-read file.
pub const BIG_MIB: usize = 256;

/// xorshift64: file contents and sizes that are not all zeros, reproducibly.
pub struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// WORK/small.tar (10k files of 512 B-8 KiB in 100 directories) and WORK/shared/big.bin
/// (256 MiB), made once.
pub fn prepare(work: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let shared = work.join("shared");
    fs::create_dir_all(&shared)?;
    let tar = work.join("small.tar");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    if !tar.exists() {
        let tree = work.join("tree");
        let _ = fs::remove_dir_all(&tree);
        let mut buf = vec![0u8; 8192];
        for i in 0..SMALL_FILES {
            let dir = tree.join(format!("d{:03}", i % SMALL_DIRS));
            if i < SMALL_DIRS {
                fs::create_dir_all(&dir)?;
            }
            let len = 512 + (rng.next() % 7681) as usize;
            rng.fill(&mut buf[..len]);
            fs::write(dir.join(format!("f{i:05}")), &buf[..len])?;
        }
        let st = Command::new("tar")
            .arg("-cf")
            .arg(work.join("small.tar.tmp"))
            .arg("-C")
            .arg(&tree)
            .arg(".")
            .status()?;
        if !st.success() {
            return Err(other(format!("tar -c: {st}")));
        }
        fs::rename(work.join("small.tar.tmp"), &tar)?;
        fs::remove_dir_all(&tree)?;
    }
    let big = shared.join("big.bin");
    if fs::metadata(&big).map(|m| m.len()).unwrap_or(0) != (BIG_MIB << 20) as u64 {
        let mut f = File::create(&big)?;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..BIG_MIB {
            rng.fill(&mut buf);
            f.write_all(&buf)?;
        }
        f.sync_all()?;
    }
    Ok((tar, big))
}

pub fn untar(tar: &Path, into: &Path) -> io::Result<Duration> {
    fs::create_dir_all(into)?;
    let t = Instant::now();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(tar)
        .arg("-C")
        .arg(into)
        .status()?;
    let d = t.elapsed();
    if !st.success() {
        return Err(other(format!("tar -x into {}: {st}", into.display())));
    }
    Ok(d)
}

pub fn read_all(path: &Path) -> io::Result<(Duration, u64)> {
    let t = Instant::now();
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        n += r as u64;
    }
    Ok((t.elapsed(), n))
}
