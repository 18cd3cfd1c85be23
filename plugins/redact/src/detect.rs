//! The built-in detectors, hand-written over bytes (no regex engine in the component).
//! Each is tried at a char boundary `i` and returns the span it matched, which may start
//! after `i` (`Bearer <token>` keeps the word `Bearer`). All of them only match ASCII, so
//! spans start and end on char boundaries.

/// What a built-in detector found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Email,
    Phone,
    Card,
    Secret,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Email,
        Category::Phone,
        Category::Card,
        Category::Secret,
    ];

    pub fn marker(self) -> &'static str {
        match self {
            Category::Email => "[REDACTED_EMAIL]",
            Category::Phone => "[REDACTED_PHONE]",
            Category::Card => "[REDACTED_CARD]",
            Category::Secret => "[REDACTED_SECRET]",
        }
    }
}

/// A detector: tried at byte `i`, the span it matched.
pub type Detector = fn(&[u8], usize) -> Option<(usize, usize)>;

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether the byte before `i` lets a token start at `i`.
fn starts_token(t: &[u8], i: usize, inner: impl Fn(u8) -> bool) -> bool {
    i == 0 || !inner(t[i - 1])
}

/// Whether the byte at `i` (if any) ends a token.
fn ends_token(t: &[u8], i: usize, inner: impl Fn(u8) -> bool) -> bool {
    t.get(i).is_none_or(|&b| !inner(b))
}

fn run(t: &[u8], from: usize, ok: impl Fn(u8) -> bool) -> usize {
    t[from..].iter().take_while(|&&b| ok(b)).count()
}

// ---------------------------------------------------------------------------------------------
// Email: local@domain.tld

/// Non-ASCII bytes count as local-part characters so a match never starts inside a word
/// ("jürgen@..." is redacted whole, not from "rgen").
fn local_char(b: u8) -> bool {
    alnum(b) || b >= 0x80 || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(b: u8) -> bool {
    alnum(b) || matches!(b, b'.' | b'-')
}

pub fn email(t: &[u8], i: usize) -> Option<(usize, usize)> {
    if !(alnum(t[i]) || t[i] >= 0x80) || !starts_token(t, i, local_char) {
        return None;
    }
    let at = i + run(t, i, local_char);
    if t.get(at) != Some(&b'@') {
        return None;
    }
    let mut end = at + 1 + run(t, at + 1, domain_char);
    while end > at + 1 && matches!(t[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let domain = &t[at + 1..end];
    let tld = domain.rsplit(|&b| b == b'.').next()?;
    let ok = domain.contains(&b'.')
        && !domain.starts_with(b".")
        && !domain.windows(2).any(|w| w == b"..")
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic);
    ok.then_some((i, end))
}

// ---------------------------------------------------------------------------------------------
// Card numbers: 13-19 digits, optionally grouped by single spaces or dashes, Luhn-valid.

pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

pub fn card(t: &[u8], i: usize) -> Option<(usize, usize)> {
    if !t[i].is_ascii_digit() || !starts_token(t, i, alnum) {
        return None;
    }
    // Digits and the end offset after each group.
    let mut digits = Vec::with_capacity(24);
    let mut group_ends: Vec<(usize, usize)> = Vec::new(); // (digit count, byte end)
    let mut j = i;
    loop {
        let n = run(t, j, |b| b.is_ascii_digit());
        if n < 3 && !group_ends.is_empty() {
            break; // "4111 1111 1111 1111 12/25": the trailing short group is not the card's
        }
        digits.extend_from_slice(&t[j..j + n]);
        j += n;
        group_ends.push((digits.len(), j));
        if digits.len() > 19 {
            break;
        }
        match (t.get(j), t.get(j + 1)) {
            (Some(b' ' | b'-'), Some(d)) if d.is_ascii_digit() => j += 1,
            _ => break,
        }
    }
    // The longest group-aligned prefix that is a valid number and ends the token.
    group_ends
        .iter()
        .rev()
        .filter(|(n, end)| (13..=19).contains(n) && ends_token(t, *end, alnum))
        .find(|(n, _)| luhn(&digits[..*n]))
        .map(|&(_, end)| (i, end))
}

// ---------------------------------------------------------------------------------------------
// Phone numbers: "+<country> ..." with 8-15 digits, or North-American 3-3-4 / 1-3-3-4
// groupings ("(555) 123-4567", "555.123.4567", "1-555-123-4567"). Bare digit runs without a
// '+' are left alone: they are far more often ids, amounts or timestamps.

pub fn phone(t: &[u8], i: usize) -> Option<(usize, usize)> {
    let plus = t[i] == b'+';
    if !(plus || t[i] == b'(' || t[i].is_ascii_digit())
        || !starts_token(t, i, |b| alnum(b) || b == b'+')
    {
        return None;
    }
    let mut j = i + usize::from(plus);
    let mut groups: Vec<usize> = Vec::new();
    let mut open = false;
    loop {
        if t.get(j) == Some(&b'(') && !open {
            open = true;
            j += 1;
        }
        let n = run(t, j, |b| b.is_ascii_digit());
        if n == 0 {
            return None;
        }
        groups.push(n);
        j += n;
        if open {
            if t.get(j) != Some(&b')') {
                return None;
            }
            open = false;
            j += 1;
            if t.get(j) == Some(&b' ') && t.get(j + 1).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            continue;
        }
        match (t.get(j), t.get(j + 1)) {
            (Some(b' ' | b'-' | b'.'), Some(&n)) if n.is_ascii_digit() || n == b'(' => j += 1,
            _ => break,
        }
    }
    if !ends_token(t, j, alnum) {
        return None;
    }
    let total: usize = groups.iter().sum();
    let ok = if plus {
        (8..=15).contains(&total) && (groups.len() == 1 || groups[0] <= 3)
    } else {
        groups == [3, 3, 4] || (groups == [1, 3, 3, 4] && t[i] == b'1')
    };
    ok.then_some((i, j))
}

// ---------------------------------------------------------------------------------------------
// Secrets: API keys and tokens with well-known prefixes.

fn key_char(b: u8) -> bool {
    alnum(b) || b == b'_' || b == b'-'
}

/// Bodies of generic-looking tokens must mix letters and digits, so prose such as
/// "sk-learn-is-a-python-library" is not a key.
fn mixed(body: &[u8]) -> bool {
    body.iter().any(u8::is_ascii_digit) && body.iter().any(u8::is_ascii_alphabetic)
}

struct Prefix {
    prefix: &'static [u8],
    body: fn(u8) -> bool,
    min: usize,
    /// Exact body length (AWS key ids, Google API keys).
    exact: bool,
    mixed: bool,
}

const fn p(
    prefix: &'static [u8],
    body: fn(u8) -> bool,
    min: usize,
    exact: bool,
    mixed: bool,
) -> Prefix {
    Prefix {
        prefix,
        body,
        min,
        exact,
        mixed,
    }
}

fn upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

const PREFIXES: &[Prefix] = &[
    // OpenAI / Anthropic (sk-proj-..., sk-ant-api03-...), and DeepSeek-style keys.
    p(b"sk-", key_char, 20, false, true),
    // Stripe.
    p(b"sk_live_", alnum, 16, false, false),
    p(b"sk_test_", alnum, 16, false, false),
    p(b"rk_live_", alnum, 16, false, false),
    // AWS access key ids.
    p(b"AKIA", upper_digit, 16, true, false),
    p(b"ASIA", upper_digit, 16, true, false),
    // GitHub.
    p(b"ghp_", alnum, 30, false, false),
    p(b"gho_", alnum, 30, false, false),
    p(b"ghu_", alnum, 30, false, false),
    p(b"ghs_", alnum, 30, false, false),
    p(b"ghr_", alnum, 30, false, false),
    p(b"github_pat_", word, 22, false, false),
    // GitLab, Slack, Google, Hugging Face, Groq.
    p(b"glpat-", key_char, 20, false, true),
    p(b"xoxb-", key_char, 10, false, true),
    p(b"xoxp-", key_char, 10, false, true),
    p(b"xoxa-", key_char, 10, false, true),
    p(b"AIza", key_char, 35, true, false),
    p(b"hf_", alnum, 30, false, true),
    p(b"gsk_", alnum, 30, false, true),
];

fn jwt_part(t: &[u8], from: usize) -> usize {
    run(t, from, key_char)
}

pub fn secret(t: &[u8], i: usize) -> Option<(usize, usize)> {
    // First letters of every prefix below, JWTs and "Bearer": most words stop here.
    if !matches!(
        t[i],
        b's' | b'r' | b'A' | b'g' | b'x' | b'h' | b'e' | b'b' | b'B'
    ) || !starts_token(t, i, key_char)
    {
        return None;
    }
    let rest = &t[i..];
    for k in PREFIXES {
        if !rest.starts_with(k.prefix) {
            continue;
        }
        let from = i + k.prefix.len();
        let n = run(t, from, k.body);
        let long_enough = if k.exact { n == k.min } else { n >= k.min };
        if long_enough
            && ends_token(t, from + n, key_char)
            && (!k.mixed || mixed(&t[from..from + n]))
        {
            return Some((i, from + n));
        }
    }
    // JSON Web Tokens: eyJ<header>.eyJ<payload>.<signature>
    if rest.starts_with(b"eyJ") {
        let a = jwt_part(t, i);
        if a >= 10 && t.get(i + a) == Some(&b'.') && t[i + a + 1..].starts_with(b"eyJ") {
            let b = jwt_part(t, i + a + 1);
            let s = i + a + 1 + b;
            if b >= 10 && t.get(s) == Some(&b'.') {
                let c = jwt_part(t, s + 1);
                if c >= 10 {
                    return Some((i, s + 1 + c));
                }
            }
        }
    }
    // "Bearer <token>": the token goes, the word stays.
    if rest.len() > 7 && rest[..7].eq_ignore_ascii_case(b"bearer ") {
        let from = i + 7;
        let n = run(t, from, |b| {
            alnum(b) || matches!(b, b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'-')
        });
        if n >= 16 && mixed(&t[from..from + n]) {
            return Some((from, from + n));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(f: Detector, s: &str) -> Vec<String> {
        let t = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < t.len() {
            match f(t, i) {
                Some((a, b)) => {
                    out.push(s[a..b].to_owned());
                    i = b;
                }
                None => i += 1,
            }
        }
        out
    }

    #[test]
    fn emails() {
        assert_eq!(
            find(email, "mail jane.doe+x@mail.example.com, or bob@corp.io."),
            ["jane.doe+x@mail.example.com", "bob@corp.io"]
        );
        assert!(find(email, "a@b.c user@localhost @handle x@y..com").is_empty());
    }

    #[test]
    fn cards() {
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
        assert_eq!(
            find(card, "pay 4111 1111 1111 1111 or 5500-0000-0000-0004 now"),
            ["4111 1111 1111 1111", "5500-0000-0000-0004"]
        );
        assert_eq!(find(card, "amex 378282246310005."), ["378282246310005"]);
        assert_eq!(
            find(card, "4111 1111 1111 1111 12/25"),
            ["4111 1111 1111 1111"]
        );
        // Not Luhn-valid, too long, inside a word, or a list of small numbers: left alone.
        assert!(find(card, "4111 1111 1111 1112").is_empty());
        assert!(find(card, "41111111111111110000").is_empty());
        assert!(find(card, "id4111111111111111").is_empty());
        assert!(find(card, "1 2 3 4 5 6 7 8 9 0 1 2 6").is_empty());
    }

    #[test]
    fn phones() {
        assert_eq!(
            find(phone, "call (555) 123-4567, 555.123.4567 or 1-555-123-4567"),
            ["(555) 123-4567", "555.123.4567", "1-555-123-4567"]
        );
        assert_eq!(
            find(phone, "intl +44 20 7946 0958 and +15551234567."),
            ["+44 20 7946 0958", "+15551234567"]
        );
        assert!(find(phone, "on 2024-01-15 10:30, order 5551234567, v1.2.3, +12").is_empty());
    }

    #[test]
    fn secrets() {
        let openai = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t";
        let aws = "AKIAIOSFODNN7EXAMPLE";
        let gh = "ghp_1234567890abcdefghijklmnopqrstuvwxyz";
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let text = format!("keys {openai} {aws}\n{gh} token={jwt}");
        assert_eq!(find(secret, &text), [openai, aws, gh, jwt]);
        assert_eq!(
            find(secret, "Authorization: Bearer abcDEF123456ghiJKL789"),
            ["abcDEF123456ghiJKL789"]
        );
        assert!(find(
            secret,
            "sk-learn-is-a-python-library, task-sk-12345678901234567890, AKIAshort, Bearer of bad news"
        )
        .is_empty());
    }
}
