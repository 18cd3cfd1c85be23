//! The live status page (`GET /ui`, and `/`): one self-contained HTML file, no external
//! assets and no build step, that polls `/health` and `/metrics` every few seconds and
//! shows providers (availability, masked keys, queue, in flight, request and error rate)
//! and plugins (state, version, last error, time per hook, reloads). `status_page.enabled:
//! false` turns it off. Served by `routes`; this module only owns the page and the masking.

/// The page itself.
pub const HTML: &str = include_str!("status_page.html");

/// A key as the status page shows it: its last four characters, and only for keys long
/// enough that four characters say nothing useful about the rest.
pub fn mask(key: &str) -> String {
    let n = key.chars().count();
    if n >= 20 {
        let tail: String = key.chars().skip(n - 4).collect();
        format!("****{tail}")
    } else {
        "****".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_show_nothing_long_keys_their_tail() {
        assert_eq!(mask("sk-test"), "****");
        assert_eq!(mask("sk-proj-abcdefghijklmnop1234"), "****1234");
    }

    #[test]
    fn page_has_no_external_assets() {
        assert!(!HTML.contains("http://") && !HTML.contains("https://"));
        assert!(!HTML.contains("src=") && !HTML.contains("<link"));
    }
}
