//! Is KVM usable for kata-rs? Opens `/dev/kvm`, asks the API version, creates a VM with one
//! vCPU and one page of memory, and runs a real-mode `hlt` to a KVM_EXIT_HLT. When that
//! cannot be done, says why: no module, no permission, no nested virtualisation, or a
//! paravirtual KVM (`kvm_pvm`) that runs this test but not a standard guest kernel.

use std::{
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

use kvm_ioctls::{Kvm, VcpuExit};

/// The device.
pub const DEV_KVM: &str = "/dev/kvm";
/// KVM's stable API version (KVM_GET_API_VERSION).
pub const KVM_API_VERSION: i32 = 12;
/// How long the test vCPU may take to reach its HLT.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the probe looks (a parameter so tests can fake the host).
#[derive(Debug, Clone)]
pub struct Host<'a> {
    /// `/sys/module`.
    pub sys_module: &'a Path,
    /// Contents of `/proc/cpuinfo`.
    pub cpuinfo: &'a str,
}

/// Paravirtual KVM modules that provide `/dev/kvm` but cannot boot a standard guest.
pub const PARAVIRT_MODULES: [&str; 1] = ["kvm_pvm"];

/// The loaded paravirtual KVM module, if any.
pub fn paravirt_module(host: &Host) -> Option<&'static str> {
    PARAVIRT_MODULES
        .into_iter()
        .find(|m| host.sys_module.join(m).exists())
}

fn cpu_flags(cpuinfo: &str) -> Vec<&str> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default()
}

/// Why there is no `/dev/kvm`, from the CPU flags and the loaded modules.
pub fn explain_missing(host: &Host) -> String {
    let flags = cpu_flags(host.cpuinfo);
    let in_vm = flags.contains(&"hypervisor");
    let virt = if flags.contains(&"vmx") {
        Some("kvm_intel")
    } else if flags.contains(&"svm") {
        Some("kvm_amd")
    } else {
        None
    };
    match virt {
        None if in_vm => "no /dev/kvm: this machine is itself a VM and its CPU shows no vmx/svm \
                          (nested virtualisation is off: enable it on the host, e.g. \
                          kvm_intel nested=1 and a CPU model with vmx, or use bare metal)"
            .into(),
        None => "no /dev/kvm: the CPU shows no vmx/svm (hardware virtualisation is off in the \
                 firmware, or the CPU has none)"
            .into(),
        Some(m) if !host.sys_module.join(m).exists() => {
            format!("no /dev/kvm: the CPU has virtualisation but module {m} is not loaded (modprobe {m})")
        }
        Some(m) => format!(
            "no /dev/kvm although {m} is loaded (udev did not create the node? mknod /dev/kvm c 10 232)"
        ),
    }
}

/// Runs the probe: Ok(summary) when a VM ran to HLT on a KVM that runs standard guests,
/// Err(reason) otherwise.
pub fn check(dev: &Path, host: &Host) -> Result<String, String> {
    let pv = paravirt_module(host);
    let res = probe(dev, host);
    match (pv, res) {
        (Some(m), Ok(s)) => Err(format!(
            "{} is a paravirtual KVM ({m}, /sys/module/{m}): {s}, but it cannot boot kata-rs's \
             standard guest kernel; use a host with hardware KVM (kvm_intel/kvm_amd) or a VM \
             with nested virtualisation",
            dev.display()
        )),
        (Some(m), Err(e)) => Err(format!(
            "{} is a paravirtual KVM ({m}, /sys/module/{m}) that cannot run a standard guest: {e}",
            dev.display()
        )),
        (None, r) => r.map(|s| format!("{}: {s}", dev.display())),
    }
}

fn probe(dev: &Path, host: &Host) -> Result<String, String> {
    let fd = match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(explain_missing(host)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(format!(
                "no permission to open {} ({e}): run as root or join its group (usually kvm)",
                dev.display()
            ))
        }
        Err(e) => return Err(format!("cannot open {}: {e}", dev.display())),
    };
    let dev = dev.to_path_buf();
    let (tx, rx) = mpsc::channel();
    // The vCPU may never come back on a broken KVM: run it on a thread we can abandon (it
    // dies with the process).
    std::thread::spawn(move || {
        let _ = tx.send(run_hlt(fd, &dev));
    });
    match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the test vCPU did not reach its HLT within {} s",
            RUN_TIMEOUT.as_secs()
        )),
    }
}

/// A page of guest memory, unmapped on drop.
struct Page(*mut libc::c_void);

const PAGE: usize = 0x1000;
/// Guest physical address of the test code.
const CODE_GPA: u64 = 0x1000;

impl Page {
    fn new() -> Result<Self, String> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing; no
        // existing memory is affected; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "cannot map test VM memory: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Page(p))
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: self.0 is the PAGE-sized mapping made in Page::new, unmapped only here.
        unsafe { libc::munmap(self.0, PAGE) };
    }
}

fn run_hlt(fd: std::fs::File, dev: &Path) -> Result<String, String> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let t0 = Instant::now();
    // SAFETY: the fd was just opened on the KVM device and is handed over (into_raw_fd), so
    // Kvm owns it alone.
    let kvm = unsafe { Kvm::from_raw_fd(fd.into_raw_fd()) };
    let api = kvm.get_api_version();
    if api != KVM_API_VERSION {
        return Err(format!(
            "{}: KVM API version {api}, expected {KVM_API_VERSION}",
            dev.display()
        ));
    }
    let vm = kvm.create_vm().map_err(|e| {
        format!(
            "{}: API {api}, but KVM_CREATE_VM failed: {e}",
            dev.display()
        )
    })?;
    // Needed on Intel hosts without unrestricted guest for real mode; harmless elsewhere.
    let _ = vm.set_tss_address(0xfffb_d000);
    let page = Page::new()?;
    // SAFETY: page.0 is a fresh PAGE-byte writable mapping; one byte at its start is written.
    unsafe { *(page.0 as *mut u8) = 0xf4 }; // hlt
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: CODE_GPA,
        memory_size: PAGE as u64,
        userspace_addr: page.0 as u64,
    };
    // SAFETY: the region is a valid mapping of memory_size bytes that outlives the VM (page
    // is dropped after vm and vcpu at the end of this function, in reverse declaration order).
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION failed: {e}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU failed: {e}"))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS failed: {e}"))?;
    let regs = kvm_bindings::kvm_regs {
        rip: CODE_GPA,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS failed: {e}"))?;
    for _ in 0..16 {
        match vcpu.run() {
            Ok(VcpuExit::Hlt) => {
                return Ok(format!(
                    "API {api}, a test VM ran to HLT in {} ms",
                    t0.elapsed().as_millis()
                ))
            }
            Ok(VcpuExit::Intr) => continue,
            Ok(other) => {
                return Err(format!(
                    "{}: API {api}, VM created, but the test vCPU stopped with {other:?} instead of HLT",
                    dev.display()
                ))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => {
                return Err(format!(
                    "{}: API {api}, VM created, but KVM_RUN failed: {e}",
                    dev.display()
                ))
            }
        }
    }
    Err("the test vCPU kept exiting without reaching HLT".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host<'a>(m: &'a Path, cpuinfo: &'a str) -> Host<'a> {
        Host {
            sys_module: m,
            cpuinfo,
        }
    }

    #[test]
    fn missing_dev_explained() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        let e = explain_missing(&host(m, "flags\t: fpu hypervisor\n"));
        assert!(e.contains("nested virtualisation is off"), "{e}");
        let e = explain_missing(&host(m, "flags\t: fpu sse\n"));
        assert!(e.contains("firmware"), "{e}");
        let e = explain_missing(&host(m, "flags\t: fpu vmx\n"));
        assert!(e.contains("module kvm_intel is not loaded"), "{e}");
        std::fs::create_dir(m.join("kvm_amd")).unwrap();
        let e = explain_missing(&host(m, "flags\t: svm\n"));
        assert!(e.contains("although kvm_amd is loaded"), "{e}");
    }

    #[test]
    fn no_device_and_paravirt_named() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        let dev = m.join("kvm-does-not-exist");
        let e = check(&dev, &host(m, "flags: vmx\n")).unwrap_err();
        assert!(e.contains("kvm_intel is not loaded"), "{e}");
        std::fs::create_dir(m.join("kvm_pvm")).unwrap();
        let e = check(&dev, &host(m, "flags: vmx\n")).unwrap_err();
        assert!(e.contains("paravirtual KVM (kvm_pvm"), "{e}");
    }

    #[test]
    fn not_a_kvm_device() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("kvm");
        std::fs::write(&f, b"").unwrap();
        // A regular file: KVM_GET_API_VERSION fails (reported as a wrong API version).
        let e = check(&f, &host(t.path(), "")).unwrap_err();
        assert!(e.contains("API version"), "{e}");
    }
}
