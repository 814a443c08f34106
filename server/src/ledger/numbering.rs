//! Document numbers: a prefix and a per-tenant sequence of at least four digits (INV-0001).

/// Formats a sequence number: `format_number("INV", 7)` is "INV-0007"; `12345` stays whole.
pub fn format_number(prefix: &str, n: i64) -> String {
    format!("{prefix}-{n:04}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn at_least_four_digits() {
        assert_eq!(super::format_number("INV", 1), "INV-0001");
        assert_eq!(super::format_number("INV", 12345), "INV-12345");
    }
}
