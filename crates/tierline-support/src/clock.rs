//! Wall-clock time and random ids, one definition each.

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `bytes` random bytes from the operating system, as lowercase hex.
pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|err| anyhow::anyhow!("no randomness from the operating system: {err}"))?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

/// A random id with a readable prefix: `conv_3f9a...` (128 bits).
pub fn new_id(prefix: &str) -> String {
    let hex = random_hex(16).expect("the operating system provides randomness");
    format!("{prefix}_{hex}")
}
