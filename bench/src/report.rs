//! The table, the statistics behind it, and the machine it ran on.

use std::fmt::Write as _;

/// Whether a row meets its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Met {
    Yes,
    No,
    /// No goal, or nothing measured.
    NotApplicable,
}

impl Met {
    pub(crate) fn from(met: bool) -> Met {
        if met {
            Met::Yes
        } else {
            Met::No
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Where the row goes in the table.
    pub(crate) order: u8,
    pub(crate) metric: String,
    pub(crate) result: String,
    pub(crate) goal: String,
    pub(crate) met: Met,
}

impl Row {
    pub(crate) fn new(order: u8, metric: impl Into<String>, result: impl Into<String>, goal: &str, met: Met) -> Row {
        Row { order, metric: metric.into(), result: result.into(), goal: goal.to_owned(), met }
    }
}

/// The markdown table.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut rows = rows.to_vec();
    rows.sort_by_key(|row| row.order);
    let mut out = String::from("| metric | result | goal | met? |\n|---|---|---|---|\n");
    for row in rows {
        let met = match row.met {
            Met::Yes => "yes",
            Met::No => "**no**",
            Met::NotApplicable => "—",
        };
        let _ = writeln!(out, "| {} | {} | {} | {met} |", row.metric, row.result, row.goal);
    }
    out
}

/// The median (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The `q` quantile (0..=1) of sorted values: the smallest value with at least `q` of them at
/// or below it.
pub(crate) fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A count with thousands separators: `31,234`.
pub(crate) fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The machine, as a few markdown lines.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, v)| v.trim()))
        .unwrap_or("unknown")
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or_else(|| "unknown".to_owned(), |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("- CPUs (nproc): {cores}\n- CPU: {cpu}\n- RAM: {ram_gib}\n- kernel: Linux {kernel}\n")
}

/// The 1-minute load average (other work on the machine skews every number).
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// fdatasync latency of 1 KiB appends to a file in `dir`: the floor under every durable
/// ingest answer.
pub(crate) fn fsync_probe(dir: &std::path::Path) -> String {
    let probe = || -> std::io::Result<(f64, f64)> {
        use std::io::Write as _;
        let file = tempfile::NamedTempFile::new_in(dir)?;
        let mut handle = file.as_file();
        let mut samples = Vec::new();
        for _ in 0..200 {
            handle.write_all(&[b'x'; 1024])?;
            let started = std::time::Instant::now();
            handle.sync_data()?;
            samples.push(started.elapsed().as_nanos() as u64);
        }
        samples.sort_unstable();
        Ok((quantile(&samples, 0.5) as f64 / 1e6, quantile(&samples, 0.99) as f64 / 1e6))
    };
    match probe() {
        Ok((p50, p99)) => format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
        Err(error) => format!("probe failed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&values, 0.5), 500);
        assert_eq!(quantile(&values, 0.99), 990);
        assert_eq!(quantile(&values, 0.999), 999);
        assert_eq!(quantile(&values, 1.0), 1000);
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
