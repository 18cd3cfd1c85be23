//! The redactor: built-in detectors plus configured patterns, applied left to right, first
//! match wins (configured patterns first, then secrets, emails, cards, phones). Pure: no
//! host imports, so everything here is unit-tested natively.

use std::borrow::Cow;

use crate::detect::{self, Category, Detector};
use crate::pattern::Pattern;

/// A configured pattern and its replacement.
#[derive(Debug, Clone)]
pub struct Custom {
    pub pattern: Pattern,
    pub replacement: String,
}

#[derive(Debug, Clone)]
pub struct Redactor {
    categories: Vec<Category>,
    custom: Vec<Custom>,
    /// Longest text a configured pattern can span.
    custom_window: usize,
}

/// Text a stream holds back at most, waiting for what follows: a longer run of token-like
/// characters is released except for its last `MAX_HOLD` bytes.
pub const MAX_HOLD: usize = 512;

/// Characters that can continue a built-in match (emails, keys, tokens, numbers).
fn run_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'.' | b'_' | b'%' | b'+' | b'-' | b'@' | b'/' | b'=' | b'~' | b'(' | b')'
        )
}

impl Redactor {
    pub fn new(categories: Vec<Category>, custom: Vec<Custom>) -> Redactor {
        let custom_window = custom
            .iter()
            .map(|c| c.pattern.max_len())
            .max()
            .unwrap_or(0);
        Redactor {
            categories,
            custom,
            custom_window,
        }
    }

    fn has(&self, c: Category) -> bool {
        self.categories.contains(&c)
    }

    /// The first match at byte `i`: (start, end, replacement).
    fn match_at(&self, t: &[u8], i: usize) -> Option<(usize, usize, &str)> {
        for c in &self.custom {
            if let Some(end) = c.pattern.at(t, i).end {
                return Some((i, end, &c.replacement));
            }
        }
        let b = t[i];
        // Every built-in match starts a token: not after a letter or digit.
        if !(b.is_ascii_alphanumeric() || b >= 0x80 || b == b'+' || b == b'(')
            || (i > 0 && t[i - 1].is_ascii_alphanumeric())
        {
            return None;
        }
        let detectors: [(Category, Detector); 4] = [
            (Category::Secret, detect::secret),
            (Category::Email, detect::email),
            (Category::Card, detect::card),
            (Category::Phone, detect::phone),
        ];
        for (cat, f) in detectors {
            if self.has(cat) {
                if let Some((s, e)) = f(t, i) {
                    return Some((s, e, cat.marker()));
                }
            }
        }
        None
    }

    /// `text` with every match replaced (borrowed when nothing matched).
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let t = text.as_bytes();
        let mut out = String::new();
        let mut copied = 0;
        let mut i = 0;
        while i < t.len() {
            if !text.is_char_boundary(i) {
                i += 1;
                continue;
            }
            match self.match_at(t, i) {
                Some((s, e, rep)) => {
                    out.push_str(&text[copied..s]);
                    out.push_str(rep);
                    copied = e;
                    i = e.max(i + 1);
                }
                None => i += 1,
            }
        }
        if copied == 0 {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }

    /// Where the tail of `text` starts that a stream must hold back because the next chunk
    /// could complete (or extend) a match in it. `text.len()` when nothing needs holding.
    pub fn hold_from(&self, text: &str) -> usize {
        let t = text.as_bytes();
        let mut cut = t.len();
        if !self.categories.is_empty() {
            // Back over the trailing run of characters a built-in match can contain, plus
            // spaces inside digit groups ("4111 1111 ...") and after "Bearer".
            while cut > 0 {
                let b = t[cut - 1];
                let inside = run_char(b)
                    || (b == b' '
                        && cut >= 2
                        && (t[cut - 2].is_ascii_digit() || t[cut - 2] == b')'))
                    || (b == b' ' && t[..cut - 1].to_ascii_lowercase().ends_with(b"bearer"));
                if !inside {
                    break;
                }
                cut -= 1;
            }
        }
        if self.custom_window > 0 {
            let from = t.len().saturating_sub(self.custom_window);
            for i in from..cut {
                if text.is_char_boundary(i)
                    && self.custom.iter().any(|c| c.pattern.at(t, i).touched_end)
                {
                    cut = i;
                    break;
                }
            }
        }
        let mut floor = t.len().saturating_sub(MAX_HOLD);
        while !text.is_char_boundary(floor) {
            floor += 1;
        }
        cut.max(floor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub fn all() -> Redactor {
        Redactor::new(
            Category::ALL.to_vec(),
            vec![Custom {
                pattern: Pattern::parse(r"EMP-\d{6}", false, true).unwrap(),
                replacement: "[REDACTED_EMPLOYEE_ID]".into(),
            }],
        )
    }

    #[test]
    fn redacts_everything_in_one_text() {
        let r = all();
        let text = "Hi, I'm jane@example.com (EMP-004211), card 4111-1111-1111-1111, \
                    call +1 555 123 4567; key sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t.";
        assert_eq!(
            r.redact(text),
            "Hi, I'm [REDACTED_EMAIL] ([REDACTED_EMPLOYEE_ID]), card [REDACTED_CARD], \
             call [REDACTED_PHONE]; key [REDACTED_SECRET]."
        );
        assert!(matches!(r.redact("nothing here 1234"), Cow::Borrowed(_)));
    }

    #[test]
    fn categories_can_be_turned_off() {
        let r = Redactor::new(vec![Category::Email], Vec::new());
        assert_eq!(
            r.redact("a@example.org 4111111111111111"),
            "[REDACTED_EMAIL] 4111111111111111"
        );
    }

    #[test]
    fn non_ascii_text_is_kept() {
        let r = all();
        assert_eq!(
            r.redact("Grüße an jürgen@example.de — 日本"),
            "Grüße an [REDACTED_EMAIL] — 日本"
        );
        assert_eq!(
            r.redact("über: ab@example.de ✓"),
            "über: [REDACTED_EMAIL] ✓"
        );
    }

    #[test]
    fn hold_back() {
        let r = all();
        let h = |s: &str| s[r.hold_from(s)..].to_owned();
        assert_eq!(h("mail me at jane.doe@exa"), "jane.doe@exa");
        assert_eq!(h("card 4111 1111 "), "4111 1111 ");
        assert_eq!(h("Authorization: Bearer "), "Bearer ");
        assert_eq!(h("id EMP-00"), "EMP-00");
        assert_eq!(h("done. "), "");
        assert_eq!(h("ok!"), "");
        let long = "x".repeat(2000);
        assert_eq!(h(&long).len(), MAX_HOLD);
    }
}
