//! `kata-rs-bench-report [DIR]`: reads DIR's (default `target/bench`) section JSONs, writes
//! `DIR/summary.json`, `DIR/summary.png` and, when the idle pod's memory was measured,
//! `DIR/runtimeclass.yaml`; prints the table. Exits 1 only when it cannot write the summary or
//! draw the chart, never because of a figure.
//!
//! `kata-rs-bench-report --runtimeclass [DIR]`: prints the RuntimeClass of
//! `deploy/runtimeclass.yaml` from `DIR/summary.json` (exits 1 when the summary has no
//! `host_overhead_kib` or `guest_used_kib`).

use std::path::PathBuf;

use kata_rs_bench_report::{chart, runtimeclass, summarize, table, Sections};

fn fail(what: &std::path::Path, e: impl std::fmt::Display) -> ! {
    eprintln!("bench-report: {}: {e}", what.display());
    std::process::exit(1);
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let rc_only = args.first().is_some_and(|a| a == "--runtimeclass");
    if rc_only {
        args.remove(0);
    }
    let dir = PathBuf::from(
        args.first()
            .cloned()
            .unwrap_or_else(|| "target/bench".into()),
    );
    if rc_only {
        let p = dir.join("summary.json");
        let sum: serde_json::Value = std::fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| fail(&p, e));
        match runtimeclass(&sum) {
            Some(y) => print!("{y}"),
            None => fail(
                &p,
                "no host_overhead_kib or guest_used_kib (section containers did not run)",
            ),
        }
        return;
    }
    let sum = summarize(&Sections::load(&dir));
    let json = serde_json::to_string_pretty(&sum).expect("a JSON value serializes");
    let out = dir.join("summary.json");
    if let Err(e) = std::fs::write(&out, json + "\n") {
        fail(&out, e);
    }
    print!("{}", table(&sum));
    if let Some(y) = runtimeclass(&sum) {
        let p = dir.join("runtimeclass.yaml");
        if let Err(e) = std::fs::write(&p, y) {
            fail(&p, e);
        }
    }
    let font = std::env::var_os("KATA_RS_BENCH_FONT")
        .map(PathBuf::from)
        .unwrap_or_else(|| chart::FONT.into());
    let png = dir.join("summary.png");
    match chart::load_font(&font).and_then(|()| chart::draw(&sum, &png)) {
        Ok(()) => println!("summary: {} and {}", out.display(), png.display()),
        Err(e) => fail(&png, e),
    }
}
