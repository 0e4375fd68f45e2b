//! The load generator of the Dovecot comparison (`benches/dovecot/compare.sh`): the same client code drives both
//! servers, over plain TCP on loopback.
//!
//! ```text
//! mailbench lmtp  --addr 127.0.0.1:2424 --connections 16 --messages 4000 --size 10240 --rcpt a@x,b@x,…
//! mailbench imap-fetch --addr 127.0.0.1:1143 --user a@x --password P --iterations 500 --window 50
//! ```
//!
//! `lmtp` opens the connections, then each delivers its share of the messages (one recipient per transaction,
//! taken round-robin from `--rcpt` by connection) and waits for the final reply of each before the next; it
//! prints deliveries per second. `imap-fetch` logs in, selects INBOX, and times `FETCH n-49:n (ENVELOPE)` of
//! the newest `--window` messages, `--iterations` times, printing p50 / p99 / mean in milliseconds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("mailbench: {e}");
        std::process::exit(1);
    }
}

struct Args {
    mode: String,
    addr: String,
    connections: usize,
    messages: usize,
    size: usize,
    rcpts: Vec<String>,
    user: String,
    password: String,
    iterations: usize,
    window: usize,
}

fn parse_args() -> Result<Args> {
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().ok_or("usage: mailbench lmtp|imap-fetch --addr HOST:PORT …")?;
    let mut a = Args {
        mode,
        addr: String::new(),
        connections: 16,
        messages: 4000,
        size: 10 * 1024,
        rcpts: Vec::new(),
        user: String::new(),
        password: String::new(),
        iterations: 500,
        window: 50,
    };
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => a.addr = value,
            "--connections" => a.connections = value.parse()?,
            "--messages" => a.messages = value.parse()?,
            "--size" => a.size = value.parse()?,
            "--rcpt" => a.rcpts = value.split(',').map(str::to_owned).collect(),
            "--user" => a.user = value,
            "--password" => a.password = value,
            "--iterations" => a.iterations = value.parse()?,
            "--window" => a.window = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.addr.is_empty() {
        return Err("--addr is required".into());
    }
    Ok(a)
}

fn run() -> Result<()> {
    let args = parse_args()?;
    match args.mode.as_str() {
        "lmtp" => lmtp(&args),
        "imap-fetch" => imap_fetch(&args),
        other => Err(format!("unknown mode {other}").into()),
    }
}

/// A message of about `size` bytes: headers like a real one, then 76-character lines.
fn message(n: usize, conn: usize, rcpt: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Load Generator <loadgen@example.org>\r\nTo: <{rcpt}>\r\nSubject: benchmark message {conn}-{n}\r\n\
         Date: Sun, 22 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{conn}.{n}.{}@loadgen.example.org>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        std::process::id()
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again, ok.\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Conn { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err("connection closed".into());
        }
        Ok(line.trim_end().to_owned())
    }

    /// An SMTP/LMTP reply (possibly multi-line); returns its code.
    fn reply(&mut self) -> Result<(u16, String)> {
        loop {
            let line = self.line()?;
            let code: u16 = line.get(..3).ok_or("short reply")?.parse()?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, line));
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes)?;
        Ok(())
    }
}

fn lmtp(args: &Args) -> Result<()> {
    if args.rcpts.is_empty() {
        return Err("--rcpt is required".into());
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|c| {
            let next = Arc::clone(&next);
            let addr = args.addr.clone();
            let rcpt = args.rcpts[c % args.rcpts.len()].clone();
            let (total, size) = (args.messages, args.size);
            std::thread::spawn(move || -> Result<Vec<Duration>> {
                let mut conn = Conn::open(&addr)?;
                conn.reply()?;
                conn.send(b"LHLO loadgen.example.org\r\n")?;
                conn.reply()?;
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let body = message(n, c, &rcpt, size);
                    let t = Instant::now();
                    conn.send(format!("MAIL FROM:<loadgen@example.org>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes())?;
                    for _ in 0..3 {
                        let (code, line) = conn.reply()?;
                        if !(200..400).contains(&code) {
                            return Err(format!("{rcpt}: {line}").into());
                        }
                    }
                    // No line of the generated message starts with '.', so no dot-stuffing is needed.
                    let mut data = body;
                    data.extend_from_slice(b".\r\n");
                    conn.send(&data)?;
                    let (code, line) = conn.reply()?;
                    if code != 250 {
                        return Err(format!("{rcpt}: {line}").into());
                    }
                    latencies.push(t.elapsed());
                }
                conn.send(b"QUIT\r\n")?;
                let _ = conn.reply();
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.join().map_err(|_| "a connection thread panicked")??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "lmtp: {} deliveries of {} bytes over {} connections in {elapsed:.2} s: {:.0} deliveries/s (latency p50 {:.2} ms, p99 {:.2} ms)",
        latencies.len(),
        args.size,
        args.connections,
        latencies.len() as f64 / elapsed,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
    );
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends an IMAP command and reads to its tagged reply, literals included; returns the untagged lines.
fn command(conn: &mut Conn, tag: &str, text: &str) -> Result<Vec<String>> {
    conn.send(format!("{tag} {text}\r\n").as_bytes())?;
    let mut lines = Vec::new();
    loop {
        let mut line = conn.line()?;
        // A literal: `{n}` at the end of the line, then n bytes, then the rest of the line.
        while let Some(open) = line.rfind('{')
            && line.ends_with('}')
        {
            let n: usize = line[open + 1..line.len() - 1].trim_end_matches('+').parse()?;
            let mut buf = vec![0; n];
            conn.reader.read_exact(&mut buf)?;
            line.push_str(&String::from_utf8_lossy(&buf));
            line.push_str(&conn.line()?);
        }
        if let Some(rest) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
            if !rest.starts_with("OK") {
                return Err(format!("{text}: {line}").into());
            }
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn imap_fetch(args: &Args) -> Result<()> {
    let mut conn = Conn::open(&args.addr)?;
    conn.line()?;
    command(&mut conn, "a1", &format!("LOGIN \"{}\" \"{}\"", args.user, args.password))?;
    let selecting = Instant::now();
    let lines = command(&mut conn, "a2", "SELECT INBOX")?;
    let select_took = selecting.elapsed();
    let exists: usize = lines
        .iter()
        .find_map(|l| l.strip_suffix(" EXISTS").and_then(|l| l.strip_prefix("* ")).and_then(|n| n.parse().ok()))
        .ok_or("no EXISTS in the SELECT response")?;
    if exists < args.window {
        return Err(format!("INBOX holds {exists} messages, fewer than the window of {}", args.window).into());
    }
    let range = format!("{}:{exists}", exists - args.window + 1);
    let mut latencies = Vec::with_capacity(args.iterations);
    // A few untimed rounds first, so both servers are measured warm.
    for i in 0..args.iterations + 10 {
        let t = Instant::now();
        let lines = command(&mut conn, &format!("f{i}"), &format!("FETCH {range} (ENVELOPE)"))?;
        let took = t.elapsed();
        if lines.iter().filter(|l| l.contains(" FETCH ")).count() != args.window {
            return Err(format!("FETCH returned {} messages, expected {}", lines.len(), args.window).into());
        }
        if i >= 10 {
            latencies.push(took);
        }
    }
    command(&mut conn, "z", "LOGOUT")?;
    latencies.sort_unstable();
    let mean = latencies.iter().sum::<Duration>() / latencies.len().max(1) as u32;
    println!(
        "imap-fetch: FETCH {range} (ENVELOPE) of {exists} messages, {} times: p50 {:.3} ms, p99 {:.3} ms, mean {:.3} ms \
         (the SELECT before them: {:.2} ms)",
        latencies.len(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(mean),
        ms(select_took),
    );
    Ok(())
}
