//! Flow files: flows written and read per second, with a 100k-flow file (mitmproxy's
//! format, `FlowWriter`/`FlowReader` as `-w` and `-r` use them).
//!
//! `cargo bench -p waylay-benches --bench flowfile` (`FLOWFILE_N` flows, default 100000).
//! First a paired comparison of the two encoders (the value tree `to_state(..).encode_into`
//! beside `FlowWriter`'s direct encoding, alternating blocks in this process), then the
//! rounds. `FLOWFILE_ONLY=encode` or `FLOWFILE_ONLY=encode-tree` encodes `FLOWFILE_N` flows
//! one way and exits, for instruction counts:
//! `FLOWFILE_N=10000 FLOWFILE_ONLY=encode valgrind --tool=callgrind target/release/deps/flowfile-*`.
//! Each flow is a GET with 20 request headers and a 1 KiB response with 8 headers, as the
//! hook benches use; the file is written to a temporary directory and read back from it.

use std::io::{BufReader, BufWriter};
use std::time::Instant;

use waylay_core::Flow;
use waylay_core::flowfile::{FlowReader, FlowWriter, to_state};
use waylay_testkit::{FlowExt, TempDir, tflow, tresp};

fn sample() -> Flow {
    let mut f = tflow().with_response(tresp());
    for i in 0..16 {
        f.request
            .headers
            .append(format!("x-header-{i}"), format!("value number {i}"));
    }
    let resp = f.response.as_mut().expect("response");
    for i in 0..6 {
        resp.headers.append(format!("x-resp-{i}"), "some value");
    }
    resp.set_raw_content(vec![b'x'; 1024]);
    f.live = false;
    Flow::Http(Box::new(f))
}

/// This process's CPU time (user + system) in seconds, from `/proc/self/stat`: on a shared
/// machine it says more than the wall clock.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let at = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based), in clock ticks (100 per second).
    (at(11) + at(12)) / 100.0
}

/// The value-tree encoder beside the direct one, in alternating blocks of `n / 20` flows,
/// so both see the same machine load.
fn paired(flow: &Flow, n: usize) {
    let block = (n / 20).max(1);
    let (mut tree_cpu, mut direct_cpu) = (0.0, 0.0);
    let mut mem = Vec::with_capacity(4096 * block);
    for _ in 0..20 {
        mem.clear();
        let c = cpu_secs();
        for _ in 0..block {
            to_state(flow).encode_into(&mut mem);
        }
        tree_cpu += cpu_secs() - c;
        let tree_len = mem.len();
        mem.clear();
        let c = cpu_secs();
        {
            let mut w = FlowWriter::new(&mut mem);
            for _ in 0..block {
                w.add(flow).expect("write");
            }
        }
        direct_cpu += cpu_secs() - c;
        assert_eq!(mem.len(), tree_len, "both encoders write the same bytes");
    }
    let total = (block * 20) as f64;
    println!(
        "paired, {} flows each: value tree {:.2} µs CPU/flow, direct {:.2} µs CPU/flow ({:.1}× faster)",
        block * 20,
        tree_cpu * 1e6 / total,
        direct_cpu * 1e6 / total,
        tree_cpu / direct_cpu.max(1e-9),
    );
}

fn main() {
    let n: usize = std::env::var("FLOWFILE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let flow = sample();
    match std::env::var("FLOWFILE_ONLY").as_deref() {
        Ok("encode") => {
            let mut mem = Vec::with_capacity(4096 * n);
            let mut w = FlowWriter::new(&mut mem);
            for _ in 0..n {
                w.add(&flow).expect("write");
            }
            println!("encoded {} bytes", mem.len());
            return;
        }
        Ok("encode-tree") => {
            let mut mem = Vec::with_capacity(4096 * n);
            for _ in 0..n {
                to_state(&flow).encode_into(&mut mem);
            }
            println!("encoded {} bytes", mem.len());
            return;
        }
        _ => {}
    }
    paired(&flow, n);
    let dir = TempDir::new("bench-flowfile");
    let path = dir.path().join("bench.flows");

    for round in 1..=3 {
        // In memory: the encoding and decoding alone.
        let (t, c) = (Instant::now(), cpu_secs());
        let mut mem = Vec::with_capacity(4096 * n);
        {
            let mut w = FlowWriter::new(&mut mem);
            for _ in 0..n {
                w.add(&flow).expect("write");
            }
        }
        let (enc, enc_cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
        let (t, c) = (Instant::now(), cpu_secs());
        let decoded = FlowReader::new(&mem[..]).filter(Result::is_ok).count();
        let (dec, dec_cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
        assert_eq!(decoded, n);
        drop(mem);
        println!(
            "round {round}: in memory: encode {:.0} flows/s ({:.2} µs/flow wall, {:.2} µs CPU), decode {:.0} flows/s ({:.2} µs/flow wall, {:.2} µs CPU)",
            n as f64 / enc,
            enc * 1e6 / n as f64,
            enc_cpu * 1e6 / n as f64,
            n as f64 / dec,
            dec * 1e6 / n as f64,
            dec_cpu * 1e6 / n as f64,
        );

        let (t, c) = (Instant::now(), cpu_secs());
        {
            let file = std::fs::File::create(&path).expect("create");
            let mut w = FlowWriter::new(BufWriter::with_capacity(256 * 1024, file));
            for _ in 0..n {
                w.add(&flow).expect("write");
            }
            w.flush().expect("flush");
        }
        let (write, write_cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
        let size = std::fs::metadata(&path).expect("file").len() as f64;

        let (t, c) = (Instant::now(), cpu_secs());
        let file = std::fs::File::open(&path).expect("open");
        let mut count = 0usize;
        for f in FlowReader::new(BufReader::new(file)) {
            f.expect("reads");
            count += 1;
        }
        let (read, read_cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - c);
        assert_eq!(count, n);
        println!(
            "round {round}: file: {n} flows, {:.1} MiB ({:.0} B/flow): write {:.0} flows/s ({:.0} MiB/s, {:.2} µs/flow, {:.2} µs CPU), read {:.0} flows/s ({:.0} MiB/s, {:.2} µs/flow, {:.2} µs CPU)",
            size / 1048576.0,
            size / n as f64,
            n as f64 / write,
            size / 1048576.0 / write,
            write * 1e6 / n as f64,
            write_cpu * 1e6 / n as f64,
            n as f64 / read,
            size / 1048576.0 / read,
            read * 1e6 / n as f64,
            read_cpu * 1e6 / n as f64,
        );
    }
}
