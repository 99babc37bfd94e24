//! Snapshot state files: round trip, and each refusal with its message.

use std::path::PathBuf;

use super::*;
use crate::vstate::vcpu_state::VcpuState;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kata-vmm-snapshot-test-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A kernel, two initrds, and the fingerprint of 256 MiB with `vcpus` vCPUs.
fn config(dir: &Scratch, vcpus: u8) -> ConfigFingerprint {
    let k = dir.file("vmlinux", b"kernel bytes");
    let i = [dir.file("initrd1", b"one"), dir.file("initrd2", b"two")];
    ConfigFingerprint::of(&k, &i, 256, vcpus).unwrap()
}

fn state(vcpus: usize) -> SnapshotState {
    let mut s = SnapshotState {
        vcpus: (0..vcpus).map(|_| VcpuState::default()).collect(),
        ..Default::default()
    };
    s.vm.clock.clock = 123_456_789;
    for (i, v) in s.vcpus.iter_mut().enumerate() {
        v.regs.rip = 0x100_0000 + i as u64;
        v.sregs.cr0 = 0x8005_0033;
        v.xsave.region[7] = 0xdead_beef;
        v.msrs = vec![kvm_bindings::kvm_msr_entry {
            index: 0x10,
            data: 42 + i as u64,
            ..Default::default()
        }];
        v.tsc_khz = Some(2_000_000);
    }
    s
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

fn format_error(r: Result<SnapshotState, SnapshotError>) -> (FormatError, String) {
    match r {
        Err(e @ SnapshotError::Format { .. }) => {
            let msg = e.to_string();
            match e {
                SnapshotError::Format { reason, .. } => (reason, msg),
                _ => unreachable!(),
            }
        }
        other => panic!(
            "expected a format refusal, got {:?}",
            other.map(|_| "a state")
        ),
    }
}

#[test]
fn round_trip() {
    let dir = Scratch::new("roundtrip");
    let fp = config(&dir, 2);
    let path = dir.0.join("state");
    save(&path, &fp, &state(2)).unwrap();
    let back = load(&path, &fp).unwrap();
    assert_eq!(json(&back), json(&state(2)));
    assert_eq!(back.vcpus[1].regs.rip, 0x100_0001);
    assert_eq!(back.vcpus[0].xsave.region[7], 0xdead_beef);
    // Saving again replaces the file and leaves no temporary file behind.
    save(&path, &fp, &state(2)).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("state"))
        .collect();
    assert_eq!(names, vec!["state".to_string()]);
}

#[test]
fn refuses_a_truncated_file() {
    let dir = Scratch::new("truncated");
    let fp = config(&dir, 1);
    let path = dir.0.join("state");
    save(&path, &fp, &state(1)).unwrap();
    let full = std::fs::read(&path).unwrap();
    for cut in [
        0,
        5,
        11,
        30,
        format::HEADER_LEN,
        full.len() / 2,
        full.len() - 1,
    ] {
        let p = dir.file("cut", &full[..cut]);
        let (e, msg) = format_error(load(&p, &fp));
        assert!(
            matches!(e, FormatError::Truncated { have, .. } if have == cut as u64),
            "cut at {cut}: {e:?}"
        );
        assert!(msg.contains("truncated"), "{msg}");
        assert!(msg.contains(&p.display().to_string()), "{msg}");
    }
    // The whole file is needed, the header says how long it is.
    let (_, msg) = format_error(load(&dir.file("cut", &full[..full.len() - 1]), &fp));
    assert!(
        msg.contains(&format!(
            "{} bytes, {} expected",
            full.len() - 1,
            full.len()
        )),
        "{msg}"
    );
}

#[test]
fn refuses_another_version() {
    let dir = Scratch::new("version");
    let fp = config(&dir, 1);
    let path = dir.0.join("state");
    save(&path, &fp, &state(1)).unwrap();
    let mut b = std::fs::read(&path).unwrap();
    b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let (e, msg) = format_error(load(&dir.file("v2", &b), &fp));
    assert!(
        matches!(e, FormatError::Version { found, supported } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{e:?}"
    );
    assert!(
        msg.contains(&format!(
            "format version {}, this kata-vmm reads version {} only",
            FORMAT_VERSION + 1,
            FORMAT_VERSION
        )),
        "{msg}"
    );
    // The version is checked before the length: a short file of another version says so.
    let (e, _) = format_error(load(&dir.file("v2cut", &b[..20]), &fp));
    assert!(matches!(e, FormatError::Version { .. }), "{e:?}");
}

#[test]
fn refuses_another_configuration() {
    let dir = Scratch::new("config");
    let fp = config(&dir, 2);
    let path = dir.0.join("state");
    save(&path, &fp, &state(2)).unwrap();

    let mut other = fp.clone();
    other.mem_mib = 512;
    other.vcpus = 4;
    let Err(e) = load(&path, &other) else {
        panic!("a snapshot of 256 MiB / 2 vCPUs loaded for 512 MiB / 4 vCPUs")
    };
    let msg = e.to_string();
    let SnapshotError::Config { differences, .. } = e else {
        panic!("{msg}")
    };
    let what: Vec<_> = differences.iter().map(|d| d.what.as_str()).collect();
    assert_eq!(what, ["memory", "vCPUs"]);
    assert!(
        msg.contains("was taken with another configuration"),
        "{msg}"
    );
    assert!(
        msg.contains("memory: snapshot 256 MiB, now 512 MiB"),
        "{msg}"
    );
    assert!(msg.contains("vCPUs: snapshot 2, now 4"), "{msg}");

    // A rebuilt kernel (other size) and a dropped initrd.
    std::fs::write(dir.0.join("vmlinux"), b"a rebuilt kernel").unwrap();
    let current =
        ConfigFingerprint::of(&dir.0.join("vmlinux"), &[dir.0.join("initrd1")], 256, 2).unwrap();
    let Err(SnapshotError::Config { differences, .. }) = load(&path, &current) else {
        panic!("a snapshot loaded for another kernel")
    };
    let what: Vec<_> = differences.iter().map(|d| d.what.as_str()).collect();
    assert_eq!(what, ["kernel", "initrd count"]);
    assert!(
        differences[0].snapshot.contains("12 bytes"),
        "{:?}",
        differences[0]
    );
    assert!(
        differences[0].current.contains("16 bytes"),
        "{:?}",
        differences[0]
    );

    // Same size, other modification time.
    let i2 = dir.0.join("initrd2");
    let f = std::fs::File::options().write(true).open(&i2).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    let mut current = fp.clone();
    current.initrds[1] = FileId::of(&i2).unwrap();
    let Err(SnapshotError::Config { differences, .. }) = load(&path, &current) else {
        panic!("a snapshot loaded for a touched initrd")
    };
    assert_eq!(differences.len(), 1);
    assert_eq!(differences[0].what, "initrd 2");
    assert!(
        differences[0].current.contains("mtime 1000000.000000000"),
        "{:?}",
        differences[0]
    );
}

#[test]
fn refuses_other_files_and_corruption() {
    let dir = Scratch::new("corrupt");
    let fp = config(&dir, 1);
    let path = dir.0.join("state");
    save(&path, &fp, &state(1)).unwrap();
    let good = std::fs::read(&path).unwrap();

    let (e, _) = format_error(load(&dir.file("text", b"hello, this is no snapshot"), &fp));
    assert!(matches!(e, FormatError::NotASnapshot), "{e:?}");

    let mut b = good.clone();
    let last = b.len() - 2;
    b[last] ^= 0x01;
    let (e, msg) = format_error(load(&dir.file("flipped", &b), &fp));
    assert!(matches!(e, FormatError::Checksum), "{e:?}");
    assert!(msg.contains("corrupt"), "{msg}");

    let mut b = good.clone();
    b.push(b'\n');
    let (e, _) = format_error(load(&dir.file("trailing", &b), &fp));
    assert!(matches!(e, FormatError::TrailingData { .. }), "{e:?}");

    let mut b = good.clone();
    b[12] = 1;
    let (e, _) = format_error(load(&dir.file("flags", &b), &fp));
    assert!(matches!(e, FormatError::Flags(1)), "{e:?}");

    // A well-formed file whose payload is not this version's state: version 3's JSON, and
    // this version's payload cut short (with a checksum that matches the cut).
    let p = dir.file("payload", &format::encode(b"{\"fingerprint\": 1}"));
    let (e, _) = format_error(load(&p, &fp));
    assert!(matches!(e, FormatError::Payload(_)), "{e:?}");
    let p = dir.file(
        "payload-cut",
        &format::encode(&encode(&fp, &state(1)).unwrap()[format::HEADER_LEN..][..500]),
    );
    let (e, msg) = format_error(load(&p, &fp));
    assert!(matches!(e, FormatError::Payload(_)), "{e:?}");
    assert!(msg.contains("end of buffer"), "{msg}");

    // A payload whose vCPU states do not match its own vCPU count.
    let path2 = dir.0.join("state2");
    save(&path2, &fp, &state(2)).unwrap();
    let (e, msg) = format_error(load(&path2, &fp));
    assert!(matches!(e, FormatError::Payload(_)), "{e:?}");
    assert!(msg.contains("2 vCPU states for 1 vCPUs"), "{msg}");

    let Err(SnapshotError::Io(..)) = load(&dir.0.join("missing"), &fp) else {
        panic!("a missing file loaded")
    };
}

#[test]
fn fingerprint_of_missing_file_fails() {
    let dir = Scratch::new("missing");
    assert!(ConfigFingerprint::of(&dir.0.join("nope"), &[], 64, 1).is_err());
}

#[test]
fn mtime_before_the_epoch() {
    let dir = Scratch::new("epoch");
    let p = dir.file("old", b"x");
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    let t = std::time::UNIX_EPOCH - std::time::Duration::from_millis(1500);
    f.set_modified(t).unwrap();
    let id = FileId::of(&p).unwrap();
    assert_eq!((id.mtime_secs, id.mtime_nanos), (-2, 500_000_000));
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_millis(500))
        .unwrap();
    assert!(!id.same_content(&FileId::of(&p).unwrap()));
}

/// Guest RAM through a memory file: zero pages are holes, the mapping is copy-on-write
/// (writes of the restored VM never reach the file), and a layout or length that does not fit
/// is refused, naming it.
#[test]
fn memory_file_round_trip_and_refusals() {
    use vm_memory::{Bytes, GuestAddress};
    let dir = Scratch::new("memory");
    let mem_bytes = 64 << 20;
    let mem = crate::vstate::memory::create(mem_bytes, false).unwrap();
    mem.write_slice(b"hello", GuestAddress(0x1000)).unwrap();
    mem.write_slice(b"world", GuestAddress((32 << 20) + 7))
        .unwrap();
    let path = dir.0.join(MEMORY_FILE);
    let f = std::fs::File::create(&path).unwrap();
    let regions = memory::save(&mem, &f).unwrap();
    assert_eq!(
        regions,
        vec![memory::MemoryRegionState {
            guest_addr: 0,
            size: mem_bytes,
            file_offset: 0,
            data: vec![(0x1000, 0x2000), (32 << 20, (32 << 20) + 0x1000)],
        }]
    );
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.len(), mem_bytes);
    use std::os::unix::fs::MetadataExt;
    assert!(
        md.blocks() * 512 < 1 << 20,
        "two pages written, the rest holes"
    );

    let f = std::fs::File::open(&path).unwrap();
    let (restored, extents) = memory::restore(&f, &regions, mem_bytes).unwrap();
    assert_eq!(
        extents, 2,
        "the two data pages, 32 MiB apart: two file mappings"
    );
    let mut b = [0u8; 5];
    restored.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
    assert_eq!(&b, b"hello");
    restored
        .read_slice(&mut b, GuestAddress((32 << 20) + 7))
        .unwrap();
    assert_eq!(&b, b"world");
    restored
        .write_slice(b"HELLO", GuestAddress(0x1000))
        .unwrap();
    // A hole (anonymous) reads zeros and takes writes; nothing of it reaches the file.
    restored
        .write_slice(b"hole", GuestAddress(16 << 20))
        .unwrap();
    let (again, _) = memory::restore(&f, &regions, mem_bytes).unwrap();
    again.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
    assert_eq!(&b, b"hello", "MAP_PRIVATE: the file is unchanged");
    let mut z = [1u8; 4];
    again.read_slice(&mut z, GuestAddress(16 << 20)).unwrap();
    assert_eq!(z, [0; 4]);
    assert!(
        std::fs::metadata(&path).unwrap().blocks() * 512 < 1 << 20,
        "the holes stay holes"
    );

    let e = memory::restore(&f, &regions, 128 << 20).unwrap_err();
    assert!(e.contains("guest RAM regions are 0x4000000@0x0"), "{e}");
    let mut moved = regions.clone();
    moved[0].file_offset = 4096;
    let e = memory::restore(&f, &moved, mem_bytes).unwrap_err();
    assert!(e.contains("file offset 0x1000"), "{e}");
    // Recorded extents that are not page-aligned ranges inside the region, in order.
    for bad in [
        vec![(0x1001, 0x2000)],
        vec![(0x2000, 0x2000)],
        vec![(0x3000, 0x4000), (0x1000, 0x2000)],
        vec![(mem_bytes - 0x1000, mem_bytes + 0x1000)],
    ] {
        let mut r = regions.clone();
        r[0].data = bad.clone();
        let e = memory::restore(&f, &r, mem_bytes).unwrap_err();
        assert!(e.contains("is not a page-aligned range"), "{bad:?}: {e}");
    }
    let cut = dir.0.join("cut");
    std::fs::write(&cut, [1u8; 4096]).unwrap();
    let e = memory::restore(&std::fs::File::open(&cut).unwrap(), &regions, mem_bytes).unwrap_err();
    assert!(e.contains("memory file is 4096 bytes"), "{e}");
}

/// A state file larger than any real one is refused before it is read.
#[test]
fn oversized_state_file_is_refused() {
    let dir = Scratch::new("oversized");
    let fp = config(&dir, 1);
    let p = dir.0.join("state");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(MAX_STATE_FILE + 1).unwrap();
    let e = load(&p, &fp).unwrap_err().to_string();
    assert!(e.contains("more than a state file has"), "{e}");
}

/// Placeholder slots (device type 0) are saved like any slot and come back as such; a state
/// file of the format before them (version 2) is refused, naming both versions.
#[test]
fn placeholder_slots_in_the_state_file() {
    use crate::devices::virtio::transport::persist::TransportState;
    let dir = Scratch::new("placeholders");
    let fp = config(&dir, 1);
    let mut s = state(1);
    s.devices = vec![
        TransportState {
            device_type: 19,
            status: 15,
            active: true,
            ..Default::default()
        },
        TransportState::default(),
        TransportState::default(),
    ];
    let path = dir.0.join("state");
    save(&path, &fp, &s).unwrap();
    let back = load(&path, &fp).unwrap();
    let types: Vec<u32> = back.devices.iter().map(|d| d.device_type).collect();
    assert_eq!(types, [19, 0, 0]);
    assert_eq!(back.devices[1], TransportState::default());
    assert_eq!(
        FORMAT_VERSION, 5,
        "placeholder slots came with version 3, the postcard payload with 4, the recorded \
         data extents and device notes with 5"
    );
    let mut old = std::fs::read(&path).unwrap();
    old[8..12].copy_from_slice(&4u32.to_le_bytes());
    let (_, msg) = format_error(load(&dir.file("v4", &old), &fp));
    assert!(
        msg.contains("format version 4, this kata-vmm reads version 5 only"),
        "{msg}"
    );
}

/// `--restore-memory copy`: the memory file's data extents land in memfd-backed guest RAM,
/// its holes are zero there and are not copied.
#[test]
fn memory_copy_of_data_extents() {
    use std::os::unix::fs::FileExt;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
    let dir = Scratch::new("memcopy");
    let mem_bytes: u64 = 64 << 20;
    let path = dir.0.join(MEMORY_FILE);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(mem_bytes).unwrap();
    let pieces: [(u64, &[u8]); 3] = [
        (0, b"first page"),
        (5 << 20, &[0xa5; 3 * memory::PAGE]),
        (mem_bytes - 4, b"tail"),
    ];
    for (at, bytes) in pieces {
        f.write_all_at(bytes, at).unwrap();
    }
    let regions = vec![memory::MemoryRegionState {
        guest_addr: 0,
        size: mem_bytes,
        file_offset: 0,
        data: Vec::new(),
    }];
    let f = std::fs::File::open(&path).unwrap();
    let (mem, copied) = memory::restore_copy(&f, &regions, mem_bytes).unwrap();
    for (at, bytes) in pieces {
        let mut b = vec![0u8; bytes.len()];
        mem.read_slice(&mut b, GuestAddress(at)).unwrap();
        assert_eq!(b, bytes, "at {at:#x}");
    }
    for hole in [memory::PAGE as u64, 1 << 20, (5 << 20) + 3 * 4096, 60 << 20] {
        let mut b = [0xffu8; 64];
        mem.read_slice(&mut b, GuestAddress(hole)).unwrap();
        assert_eq!(b, [0u8; 64], "hole at {hole:#x}");
    }
    assert!(
        (5 * 4096..1 << 20).contains(&copied),
        "only the data extents are copied: {copied} bytes"
    );
    assert!(
        mem.iter().all(|r| r.file_offset().is_some()),
        "memfd-backed guest RAM"
    );
    // Refused as for a mapping: a memory file of another size.
    let e = memory::restore_copy(&f, &regions, 128 << 20).unwrap_err();
    assert!(e.contains("guest RAM regions are 0x4000000@0x0"), "{e}");
}
