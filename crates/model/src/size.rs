//! Upstream's human-readable size format, byte for byte.
//!
//! The rsync daemon's `disk_usage_human` / `total_size_human` fields and the dashboard's "Data Size"
//! tooltip line all use this format, so it must match the Python `_format_bytes` exactly:
//! 1024-based divisions with SI-looking labels, one decimal except for plain bytes, and the unit
//! chosen before rounding (so 1048575 bytes is `"1024.0 KB"`).

/// Formats a byte count the way upstream's `_format_bytes` does.
///
/// ```
/// use etho_model::size::format_bytes;
/// assert_eq!(format_bytes(0), "0 B");
/// assert_eq!(format_bytes(1536), "1.5 KB");
/// assert_eq!(format_bytes(1_048_575), "1024.0 KB");
/// assert_eq!(format_bytes(287_646_297_933), "267.9 GB");
/// ```
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    if bytes == 0 {
        return "0 B".to_string();
    }
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::format_bytes;

    #[test]
    fn matches_upstream_table() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (1, "1 B"),
            (1023, "1023 B"),
            (1024, "1.0 KB"),
            (1536, "1.5 KB"),
            (1_048_575, "1024.0 KB"),
            (1_048_576, "1.0 MB"),
            (2_500_000, "2.4 MB"),
            (1_200_000, "1.1 MB"),
            (287_646_297_933, "267.9 GB"),
            (544_649_438_682, "507.2 GB"),
            (11_215_763_841_541, "10.2 TB"),
            (20_696_678_673_241, "18.8 TB"),
            (5 * 1024u64.pow(5), "5120.0 TB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(format_bytes(*bytes), *want, "format_bytes({bytes})");
        }
    }

    #[test]
    fn rounds_half_to_even_on_the_binary_value() {
        // 2.25 KiB and 2.35 KiB: Python's "%.1f" gives "2.2" and "2.4".
        assert_eq!(format_bytes(2304), "2.2 KB");
        assert_eq!(format_bytes((2.35f64 * 1024.0) as u64), "2.3 KB");
    }
}
