//! `summary.png`: the ratios against runc and QEMU as horizontal bars around 1.0, and the
//! kata pod's start-time profile as one stacked bar. Drawn with plotters' bitmap backend and
//! its `ab_glyph` text: the only system file it needs is a TrueType font ([`FONT`], Debian
//! `fonts-dejavu-core`, in `make deps`), no fontconfig.

use plotters::prelude::*;
use plotters::style::register_font;
use serde_json::Value;
use std::path::Path;

/// The font the chart's text is drawn with unless `KATA_RS_BENCH_FONT` names another.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

const W: i32 = 1200;
const H: i32 = 720;

/// The chart's ratio rows: key, label, and whether lower is better (a time) or higher (a
/// throughput).
const RATIOS: &[(&str, &str, bool)] = &[
    ("ratio_ctr_run", "ctr run --rm (kata / runc)", true),
    ("ratio_pod_start", "CRI pod start (kata / runc)", true),
    ("ratio_pod_churn", "CRI pod churn (kata / runc)", true),
    ("ratio_boot", "VMM boot (kata-vmm / qemu)", true),
    ("ratio_vmm_cpu", "VMM own CPU (kata-vmm / qemu)", true),
    ("ratio_io_read", "read 256 MiB (kata / runc)", false),
    ("ratio_io_untar", "untar 10k files (kata / runc)", false),
    ("ratio_iperf3", "iperf3 (kata / runc)", false),
    ("ratio_template_start", "VM start, template / cold", true),
    ("ratio_template_memory", "VM PSS, template / cold", true),
];

const PHASE_COLORS: [RGBColor; 8] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0x9c, 0x75, 0x5f),
];

/// Registers the font file `path` as plotters' `sans-serif`.
pub fn load_font(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "{}: {e} (Debian: apt-get install fonts-dejavu-core, or set KATA_RS_BENCH_FONT)",
            path.display()
        )
    })?;
    // plotters keeps the font for the process's life.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{}: not a TrueType/OpenType font", path.display()))
}

fn err(e: impl std::fmt::Debug) -> String {
    format!("drawing the chart: {e:?}")
}

/// Draws `sum` (summary.json's object) into the PNG `out`; [`load_font`] must have run.
pub fn draw(sum: &Value, out: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(out, (W as u32, H as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let font = |size: i32| ("sans-serif", size).into_font();
    let text = |s: &str, x: i32, y: i32, size: i32, c: &RGBColor| {
        root.draw(&Text::new(s.to_string(), (x, y), font(size).color(c)))
    };
    let title = format!(
        "kata-rs bench: node {}, N={}, git {}, {}",
        sum["node"].as_str().unwrap_or("?"),
        sum["n"],
        sum["git"].as_str().unwrap_or("?"),
        sum["date"].as_str().unwrap_or("?")
    );
    text(&title, 20, 12, 22, &BLACK).map_err(err)?;
    if sum["node"]
        .as_str()
        .is_some_and(|n| n.starts_with("emulated"))
    {
        text(
            "emulated node (nested, TCG): absolute times are meaningless, compare ratios",
            20,
            40,
            15,
            &RGBColor(0xa0, 0x30, 0x30),
        )
        .map_err(err)?;
    }

    // Ratios: bars from 0, a line at 1.0 (parity with runc / QEMU).
    let (x0, x1, y0, row) = (330, W - 90, 80, 38);
    let max = RATIOS
        .iter()
        .filter_map(|(k, _, _)| sum[*k].as_f64())
        .fold(2.0_f64, f64::max)
        .ceil();
    let px = |r: f64| x0 + ((r / max) * (x1 - x0) as f64) as i32;
    text(
        "ratios (time, memory: lower is better; throughput: higher is better)",
        x0,
        y0 - 18,
        15,
        &BLACK,
    )
    .map_err(err)?;
    // The parity line first: the bars and their labels go over it.
    let yb = y0 + RATIOS.len() as i32 * row;
    root.draw(&PathElement::new(
        vec![(px(1.0), y0 - 2), (px(1.0), yb)],
        BLACK.stroke_width(2),
    ))
    .map_err(err)?;
    for (i, (k, label, lower)) in RATIOS.iter().enumerate() {
        let y = y0 + i as i32 * row;
        text(label, 20, y + 8, 16, &BLACK).map_err(err)?;
        match sum[*k].as_f64() {
            Some(r) => {
                let good = if *lower { r <= 1.0 } else { r >= 1.0 };
                let c = if good {
                    RGBColor(0x59, 0xa1, 0x4f)
                } else {
                    RGBColor(0xe1, 0x57, 0x59)
                };
                root.draw(&Rectangle::new(
                    [(x0, y + 4), (px(r).max(x0 + 1), y + row - 8)],
                    c.filled(),
                ))
                .map_err(err)?;
                let dir = match (*lower, *k) {
                    (true, "ratio_template_memory") => "memory",
                    (true, _) => "time",
                    (false, _) => "thrpt",
                };
                text(&format!("{r:.2} ({dir})"), px(r) + 6, y + 8, 15, &BLACK).map_err(err)?;
            }
            None => text(
                "not measured",
                x0 + 6,
                y + 8,
                15,
                &RGBColor(0x80, 0x80, 0x80),
            )
            .map_err(err)?,
        }
    }
    let mut t = 0.0;
    while t <= max {
        root.draw(&PathElement::new(
            vec![(px(t), yb), (px(t), yb + 5)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
        text(&format!("{t}"), px(t) - 4, yb + 8, 13, &BLACK).map_err(err)?;
        t += if max > 6.0 { 2.0 } else { 0.5 };
    }

    // Memory line.
    let kib = |k: &str| sum[k].as_f64().map(|v| format!("{:.1} MiB", v / 1024.0));
    let mem = format!(
        "idle pod, host PSS excl. guest RAM: kata {} (shim {}, VMM {}, virtiofsd {}), runc {};  guest RAM backed: {}",
        kib("host_overhead_kib").unwrap_or("-".into()),
        kib("host_overhead_shim_kib").unwrap_or("-".into()),
        kib("host_overhead_vmm_kib").unwrap_or("-".into()),
        kib("host_overhead_virtiofsd_kib").unwrap_or("-".into()),
        kib("host_overhead_runc_kib").unwrap_or("-".into()),
        kib("guest_used_kib").unwrap_or("-".into()),
    );
    text(&mem, 20, yb + 30, 15, &BLACK).map_err(err)?;
    let per_gib = |k: &str| sum[k].as_f64().map_or("-".into(), |v| format!("{v:.1}"));
    let dens = format!(
        "density, idle pods per GiB of node memory (MemAvailable drop): kata {}, runc {}",
        per_gib("density_pods_per_gib_kata"),
        per_gib("density_pods_per_gib_runc")
    );
    text(&dens, 20, yb + 50, 15, &BLACK).map_err(err)?;

    // Start profile: one stacked bar, a legend under it.
    let yp = yb + 80;
    text(
        "kata pod start through CRI, where the time goes (median per phase)",
        20,
        yp,
        17,
        &BLACK,
    )
    .map_err(err)?;
    let phases: Vec<(String, f64)> = sum["profile"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p["phase"].as_str()?.to_string(), p["ms"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let total: f64 = phases.iter().map(|p| p.1).sum();
    let (bx0, bx1, by) = (20, W - 40, yp + 28);
    if phases.is_empty() || total <= 0.0 {
        text(
            "no profile in this run",
            bx0,
            by + 8,
            15,
            &RGBColor(0x80, 0x80, 0x80),
        )
        .map_err(err)?;
    } else {
        let mut acc = 0.0;
        for (i, (name, ms)) in phases.iter().enumerate() {
            let a = bx0 + (acc / total * (bx1 - bx0) as f64) as i32;
            acc += ms;
            let b = bx0 + (acc / total * (bx1 - bx0) as f64) as i32;
            let c = PHASE_COLORS[i % PHASE_COLORS.len()];
            root.draw(&Rectangle::new(
                [(a, by), (b.max(a + 1), by + 44)],
                c.filled(),
            ))
            .map_err(err)?;
            let lx = bx0 + (i as i32 % 3) * 390;
            let ly = by + 60 + (i as i32 / 3) * 24;
            root.draw(&Rectangle::new([(lx, ly), (lx + 16, ly + 16)], c.filled()))
                .map_err(err)?;
            text(
                &format!("{name}: {ms:.0} ms ({:.0} %)", ms / total * 100.0),
                lx + 22,
                ly,
                15,
                &BLACK,
            )
            .map_err(err)?;
        }
        text(
            &format!("total {total:.0} ms"),
            bx1 - 140,
            by - 22,
            15,
            &BLACK,
        )
        .map_err(err)?;
    }
    root.present().map_err(err)
}
