//! Deterministic input data, generated in-process (no downloads): the same
//! seed gives the same bytes in both binaries.

use serde::{Deserialize, Serialize};

/// SplitMix64: tiny, fast, and good enough to make varied test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
    "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu", "secret", "arena", "kernel", "page", "slab", "memory", "token", "password",
];
const DOMAINS: &[&str] = &["example.com", "mail.example.org", "corp.example.net", "test.invalid"];
const KINDS: &[&str] = &["login", "logout", "purchase", "refund", "rotate-key", "upload"];

/// One JSON record: strings, numbers, a nested object and an array of objects.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
pub struct Record {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub active: bool,
    pub score: f64,
    pub tags: Vec<String>,
    pub address: Address,
    pub history: Vec<Event>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
pub struct Address {
    pub street: String,
    pub city: String,
    pub zip: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
pub struct Event {
    pub ts: u64,
    pub kind: String,
    pub amount: i64,
    pub note: String,
}

fn record(rng: &mut Rng, id: u64) -> Record {
    let first = rng.pick(WORDS);
    let last = rng.pick(WORDS);
    let tags = (0..rng.below(6)).map(|_| rng.pick(WORDS).to_string()).collect();
    let history = (0..1 + rng.below(4))
        .map(|_| Event {
            ts: 1_700_000_000 + rng.below(100_000_000),
            kind: rng.pick(KINDS).to_string(),
            amount: rng.below(2_000_000) as i64 - 1_000_000,
            // Escapes make serde_json take its scratch-buffer path.
            note: format!("{} \"{}\"\n{}", rng.pick(WORDS), rng.pick(WORDS), rng.below(1000)),
        })
        .collect();
    Record {
        id,
        name: format!("{first} {last}"),
        email: format!("{first}.{last}{}@{}", rng.below(100), rng.pick(DOMAINS)),
        active: rng.below(2) == 1,
        score: rng.below(1_000_000) as f64 / 1000.0,
        tags,
        address: Address {
            street: format!("{} {} street", 1 + rng.below(999), rng.pick(WORDS)),
            city: rng.pick(WORDS).to_string(),
            zip: format!("{:05}", rng.below(100_000)),
        },
        history,
    }
}

/// A JSON array of records, serialized, of at least `bytes` bytes.
pub fn json_text(bytes: usize) -> String {
    let mut rng = Rng::new(0x4a53_4f4e);
    let mut records = Vec::new();
    let mut estimate = 0;
    while estimate < bytes {
        let r = record(&mut rng, records.len() as u64);
        estimate += serde_json::to_string(&r).map_or(0, |s| s.len() + 1);
        records.push(r);
    }
    serde_json::to_string(&records).expect("records serialize")
}

/// About `bytes` of log-like text: words, e-mail addresses, dates and IPv4
/// addresses, one record per line.
pub fn log_text(bytes: usize) -> String {
    use std::fmt::Write;
    let mut rng = Rng::new(0x0052_4547_4558);
    let mut s = String::with_capacity(bytes + 256);
    while s.len() < bytes {
        let _ = write!(
            s,
            "{:04}-{:02}-{:02} {}.{}.{}.{} ",
            2000 + rng.below(27),
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(256),
            rng.below(256),
            rng.below(256),
            rng.below(256)
        );
        for _ in 0..4 + rng.below(8) {
            s.push_str(rng.pick(WORDS));
            s.push(' ');
        }
        if rng.below(4) == 0 {
            let _ = write!(s, "{}.{}@{} ", rng.pick(WORDS), rng.below(1000), rng.pick(DOMAINS));
        }
        s.push('\n');
    }
    s
}

/// `n` pseudo-random `u64`s.
pub fn numbers(n: usize) -> Vec<u64> {
    let mut rng = Rng::new(0x534f_5254);
    (0..n).map(|_| rng.next_u64()).collect()
}
