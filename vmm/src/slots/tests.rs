//! Unit tests of `slots.rs`.

use clap::Parser;

use super::*;
use crate::args::Args;

fn cfg(extra: &[&str]) -> VmConfig {
    let mut argv = vec![
        "kata-vmm",
        "--kernel",
        "k",
        "--initrd",
        "i",
        "--console-log",
        "c",
        "--mem-mib",
        "256",
        "--vcpus",
        "1",
        "--vsock-cid",
        "3",
    ];
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv).unwrap().validate().unwrap()
}

use SlotDevice::*;

fn devices(plan: &[Slot]) -> Vec<(SlotDevice, bool)> {
    plan.iter()
        .map(|s| (s.device, s.fills_placeholder))
        .collect()
}

/// A template booted with `--fs-slot` has virtio-fs where `--fs` would be; restored with
/// `--fs`, the backend goes into that slot (its state applied), not into a placeholder.
#[test]
fn an_fs_slot_is_saved_in_place_and_taken_over_by_fs() {
    let c = cfg(&["--fs-slot", "tag=t", "--placeholder-slots", "2"]);
    assert_eq!(
        devices(&cold_boot(&c)),
        [
            (Vsock, false),
            (Rng, false),
            (FsSlot, false),
            (Placeholder, false),
            (Placeholder, false)
        ]
    );
    let r = cfg(&[
        "--restore",
        "/s",
        "--fs",
        "socket=/v,tag=t",
        "--net",
        "tap=t0",
    ]);
    assert_eq!(
        devices(&restore(&r, &[19, 4, 26, 0, 0]).unwrap()),
        [
            (Vsock, false),
            (Rng, false),
            (Fs, false),
            (Net(0), true),
            (Placeholder, false)
        ]
    );
    for bad in [
        &["--fs-slot", "tag=t", "--fs", "socket=/v,tag=t"][..],
        &["--fs-slot", "tag=t", "--restore", "/s"],
    ] {
        let mut argv = vec!["kata-vmm", "--kernel", "k", "--console-log", "c"];
        argv.extend_from_slice(bad);
        let e = Args::try_parse_from(argv).unwrap_err().to_string();
        assert!(e.contains("cannot be used with"), "{e}");
    }
}

#[test]
fn cold_boot_order_with_placeholders_last() {
    let c = cfg(&[
        "--disk",
        "d",
        "--net",
        "tap=t",
        "--virtio-console",
        "--fs",
        "socket=s,tag=t",
        "--placeholder-slots",
        "2",
    ]);
    assert_eq!(
        devices(&cold_boot(&c)),
        [
            (Vsock, false),
            (Rng, false),
            (Disk(0), false),
            (Net(0), false),
            (Console, false),
            (Fs, false),
            (Placeholder, false),
            (Placeholder, false)
        ]
    );
}

/// A template (vsock, rng, 4 placeholders) restored with a share, a card and a disk: fs
/// first, then the net, then the disk, each in a placeholder slot; the fourth stays empty.
#[test]
fn restore_fills_placeholders_fs_nets_disks() {
    let c = cfg(&[
        "--restore",
        "/s",
        "--disk",
        "d",
        "--net",
        "tap=t",
        "--fs",
        "socket=s,tag=t",
    ]);
    let plan = restore(&c, &[19, 4, 0, 0, 0, 0]).unwrap();
    assert_eq!(
        devices(&plan),
        [
            (Vsock, false),
            (Rng, false),
            (Fs, true),
            (Net(0), true),
            (Disk(0), true),
            (Placeholder, false)
        ]
    );
}

/// The snapshot's own disk and card keep their slots (the first --disk/--net); the extra
/// --net goes into the placeholder.
#[test]
fn restore_keeps_the_snapshots_own_devices() {
    let c = cfg(&[
        "--restore",
        "/s",
        "--disk",
        "d",
        "--net",
        "tap=own",
        "--net",
        "tap=extra",
    ]);
    let plan = restore(&c, &[19, 4, 2, 1, 0, 0]).unwrap();
    assert_eq!(
        devices(&plan),
        [
            (Vsock, false),
            (Rng, false),
            (Disk(0), false),
            (Net(0), false),
            (Net(1), true),
            (Placeholder, false)
        ]
    );
    // Without placeholders nothing changes: the snapshot's devices, in its order.
    let c = cfg(&["--restore", "/s", "--virtio-console"]);
    assert_eq!(
        devices(&restore(&c, &[19, 3, 4]).unwrap()),
        [(Vsock, false), (Console, false), (Rng, false)]
    );
}

#[test]
fn restore_refusals_name_the_counts() {
    let c = cfg(&[
        "--restore",
        "/s",
        "--net",
        "tap=a",
        "--net",
        "tap=b",
        "--fs",
        "socket=s,tag=t",
    ]);
    let e = restore(&c, &[19, 4, 0, 0]).unwrap_err();
    assert_eq!(
        e,
        "3 devices to place beyond the snapshot's own (--fs: 1, --net: 2, --disk: 0), the \
         snapshot has 2 placeholder slots"
    );
    let c = cfg(&["--restore", "/s"]);
    assert_eq!(
        restore(&c, &[19, 4, 2]).unwrap_err(),
        "the snapshot has 1 virtio-blk disks, 0 --disk given"
    );
    assert_eq!(
        restore(&c, &[19, 1]).unwrap_err(),
        "the snapshot has 1 virtio-net cards, 0 --net given"
    );
    assert!(restore(&c, &[19]).unwrap_err().contains("no virtio-rng"));
    assert!(restore(&c, &[4]).unwrap_err().contains("no virtio-vsock"));
    assert!(restore(&c, &[19, 4, 19])
        .unwrap_err()
        .contains("slot 2: a second virtio-vsock"));
    assert!(restore(&c, &[19, 4, 3])
        .unwrap_err()
        .contains("slot 2: the snapshot has virtio-console"));
    assert_eq!(
        restore(&c, &[19, 4, 26]).unwrap_err(),
        "the snapshot has a virtio-fs slot (saved with --fs-slot), --fs not given"
    );
    let fs = cfg(&["--restore", "/s", "--fs", "socket=/v,tag=t"]);
    assert_eq!(
        restore(&fs, &[19, 4, 26, 0, 26]).unwrap_err(),
        "the snapshot has 2 virtio-fs devices"
    );
    assert!(restore(&c, &[19, 4, 77])
        .unwrap_err()
        .contains("slot 2: virtio device type 77"));
    let c = cfg(&["--restore", "/s", "--no-rng"]);
    assert!(restore(&c, &[19, 4])
        .unwrap_err()
        .contains("--no-rng given"));
    // Untrusted: a state file with more slots than IRQs.
    let many = vec![0u32; MAX_VIRTIO_SLOTS + 1];
    assert_eq!(
        restore(&c, &many).unwrap_err(),
        "20 virtio-mmio slots in the snapshot, at most 19"
    );
}
