//! The workloads. Each prepares its input (not timed), then runs its timed
//! phase between `timer.start()` and `timer.stop()`, frees included (the
//! arena wipes on free, so freeing is part of its cost), and returns a
//! checksum that must be the same under either allocator.

use std::collections::{BTreeMap, HashMap};

use rayon::slice::ParallelSliceMut;
use regex::Regex;

use crate::Timer;
use crate::data::{self, Record, Rng};

/// Names accepted on the command line, in the order the script runs them.
pub const ALL: &[&str] = &["json", "regex", "sort", "tokio", "hashmap", "btreemap"];

pub fn run(name: &str, scale: f64, timer: &mut Timer) -> Option<u64> {
    let n = |full: f64| ((full * scale) as usize).max(1);
    Some(match name {
        "json" => json(n(20e6), timer),
        "regex" => regex(n(50e6), timer),
        "sort" => sort(n(20e6), timer),
        "tokio" => tokio(n(100e3), timer),
        "hashmap" => hashmap(n(2e6), timer),
        "btreemap" => btreemap(n(2e6), timer),
        _ => return None,
    })
}

/// serde_json: parse ~20 MB into an untyped `Value` and into typed records,
/// and serialize both back.
fn json(bytes: usize, timer: &mut Timer) -> u64 {
    let text = data::json_text(bytes);
    eprintln!("json: {} bytes of input", text.len());
    timer.start();
    let value: serde_json::Value = serde_json::from_str(&text).expect("generated JSON parses");
    let untyped = serde_json::to_string(&value).expect("Value serializes");
    let records: Vec<Record> = serde_json::from_str(&text).expect("generated JSON parses as records");
    let typed = serde_json::to_string(&records).expect("records serialize");
    let sum = untyped.len() as u64 + typed.len() as u64 + records.iter().map(|r| r.history.len() as u64).sum::<u64>();
    assert_eq!(typed, text, "typed round trip changed the text");
    drop((value, untyped, records, typed));
    timer.stop();
    sum
}

/// regex over ~50 MB: count e-mail addresses, sum the years of all dates,
/// count words in a `HashMap`, and replace every IPv4 address.
fn regex(bytes: usize, timer: &mut Timer) -> u64 {
    let text = data::log_text(bytes);
    eprintln!("regex: {} bytes of input", text.len());
    timer.start();
    let email = Regex::new(r"(?-u)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b").expect("valid regex");
    let date = Regex::new(r"(?-u)\b(\d{4})-(\d{2})-(\d{2})\b").expect("valid regex");
    let word = Regex::new(r"(?-u)\b[a-z]+\b").expect("valid regex");
    let ipv4 = Regex::new(r"(?-u)\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b").expect("valid regex");
    let emails = email.find_iter(&text).count() as u64;
    let years: u64 = date.captures_iter(&text).map(|c| c[1].parse::<u64>().expect("four digits")).sum();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for m in word.find_iter(&text) {
        *counts.entry(m.as_str()).or_default() += 1;
    }
    let redacted = ipv4.replace_all(&text, "x.x.x.x");
    let sum = emails + years + counts.len() as u64 + counts.values().sum::<u64>() + redacted.len() as u64;
    drop((counts, redacted, email, date, word, ipv4));
    timer.stop();
    sum
}

/// rayon: copy 20M `u64`s and sort the copy with the stable parallel merge
/// sort, which allocates a buffer as large as the input.
fn sort(n: usize, timer: &mut Timer) -> u64 {
    let input = data::numbers(n);
    timer.start();
    let mut v = input.clone();
    v.par_sort();
    assert!(v.windows(2).all(|w| w[0] <= w[1]), "not sorted");
    let sum = v[v.len() / 2] ^ v[v.len() - 1];
    drop(v);
    timer.stop();
    sum
}

/// tokio: a multi-thread runtime runs `tasks` tasks; each allocates a few
/// strings across yields and reports through an unbounded channel.
fn tokio(tasks: usize, timer: &mut Timer) -> u64 {
    timer.start();
    let rt = tokio::runtime::Builder::new_multi_thread().build().expect("tokio runtime");
    let sum = rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let mut handles = Vec::with_capacity(tasks);
        for i in 0..tasks {
            let tx = tx.clone();
            handles.push(tokio::spawn(async move {
                let mut parts = Vec::new();
                for step in 0..8 {
                    parts.push(format!("task {i} step {step}"));
                    tokio::task::yield_now().await;
                }
                let len: usize = parts.iter().map(String::len).sum();
                tx.send(len as u64).expect("receiver alive");
            }));
        }
        drop(tx);
        for h in handles {
            h.await.expect("task completes");
        }
        let mut sum = 0;
        while let Some(len) = rx.recv().await {
            sum += len;
        }
        sum
    });
    drop(rt);
    timer.stop();
    sum
}

/// `HashMap<String, Vec<u32>>` churn: `ops` random inserts and removes over
/// a key space of 1M (about 400,000 entries live at the end).
fn hashmap(ops: usize, timer: &mut Timer) -> u64 {
    let mut rng = Rng::new(0x4841_5348);
    timer.start();
    let mut map: HashMap<String, Vec<u32>> = HashMap::new();
    let mut sum = 0u64;
    for _ in 0..ops {
        let k = rng.below(1 << 20);
        let key = format!("key-{k:016x}");
        if rng.below(2) == 0 {
            let value = (0..1 + (k % 8) as u32).collect();
            map.insert(key, value);
        } else if let Some(v) = map.remove(&key) {
            sum += v.len() as u64;
        }
    }
    sum += map.len() as u64;
    drop(map);
    timer.stop();
    sum
}

/// `BTreeMap<u64, String>` churn, as for the `HashMap`.
fn btreemap(ops: usize, timer: &mut Timer) -> u64 {
    let mut rng = Rng::new(0x4254_5245);
    timer.start();
    let mut map: BTreeMap<u64, String> = BTreeMap::new();
    let mut sum = 0u64;
    for _ in 0..ops {
        let k = rng.below(1 << 20);
        if rng.below(2) == 0 {
            map.insert(k, format!("value {k} {}", "x".repeat((k % 48) as usize)));
        } else if let Some(v) = map.remove(&k) {
            sum += v.len() as u64;
        }
    }
    sum += map.len() as u64 + map.range(1000..2000).map(|(k, _)| *k).sum::<u64>();
    drop(map);
    timer.stop();
    sum
}
