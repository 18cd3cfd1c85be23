//! Configured patterns: a deliberately tiny language instead of a regex engine.
//!
//! Every character stands for itself, except the escapes
//! `\d` (digit), `\a` (ASCII letter), `\w` (letter, digit or `_`), `\x` (hex digit),
//! `\s` (whitespace), `\.` (any character) and `\\` (a backslash). An escape may be followed by
//! a count: `{n}`, `{n,m}`, `+` (1 to 64), `*` (0 to 64) or `?` (0 or 1). Literals are patterns
//! without escapes. Example: `EMP-\d{6}`, `acct_\w+`.

/// Most repetitions `+` and `*` stand for: bounds how much a stream holds back.
pub const MAX_REPEAT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Digit,
    Alpha,
    Word,
    Hex,
    Space,
    Any,
}

impl Class {
    fn matches(self, b: u8) -> bool {
        match self {
            Class::Digit => b.is_ascii_digit(),
            Class::Alpha => b.is_ascii_alphabetic(),
            Class::Word => b.is_ascii_alphanumeric() || b == b'_',
            Class::Hex => b.is_ascii_hexdigit(),
            Class::Space => b.is_ascii_whitespace(),
            Class::Any => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    /// One literal character, as its UTF-8 bytes.
    Lit(Vec<u8>),
    Class {
        class: Class,
        min: usize,
        max: usize,
    },
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    atoms: Vec<Atom>,
    case_insensitive: bool,
    whole_word: bool,
}

/// The result of matching at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// End of the longest match starting there.
    pub end: Option<usize>,
    /// Whether the attempt ran into the end of the text: more text could change the answer
    /// (a stream must hold this text back).
    pub touched_end: bool,
}

fn parse_count(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<(usize, usize), String> {
    match chars.peek() {
        Some('+') => {
            chars.next();
            Ok((1, MAX_REPEAT))
        }
        Some('*') => {
            chars.next();
            Ok((0, MAX_REPEAT))
        }
        Some('?') => {
            chars.next();
            Ok((0, 1))
        }
        Some('{') => {
            chars.next();
            let mut body = String::new();
            loop {
                match chars.next() {
                    Some('}') => break,
                    Some(c) => body.push(c),
                    None => return Err("unclosed '{'".into()),
                }
            }
            let num = |s: &str| {
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("bad count {{{body}}}"))
            };
            let (min, max) = match body.split_once(',') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(&body)?;
                    (n, n)
                }
            };
            if max == 0 || min > max || max > 256 {
                return Err(format!(
                    "bad count {{{body}}}: need 0 <= n <= m <= 256, m > 0"
                ));
            }
            Ok((min, max))
        }
        _ => Ok((1, 1)),
    }
}

impl Pattern {
    /// A pattern matching `s` exactly.
    pub fn literal(s: &str, case_insensitive: bool, whole_word: bool) -> Result<Pattern, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        let atoms = s
            .chars()
            .map(|c| Atom::Lit(c.to_string().into_bytes()))
            .collect();
        Ok(Pattern {
            atoms,
            case_insensitive,
            whole_word,
        })
    }

    /// Compile `src` (see the module docs).
    pub fn parse(src: &str, case_insensitive: bool, whole_word: bool) -> Result<Pattern, String> {
        let mut atoms = Vec::new();
        let mut chars = src.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\\' {
                atoms.push(Atom::Lit(c.to_string().into_bytes()));
                continue;
            }
            let class = match chars.next() {
                Some('d') => Class::Digit,
                Some('a') => Class::Alpha,
                Some('w') => Class::Word,
                Some('x') => Class::Hex,
                Some('s') => Class::Space,
                Some('.') => Class::Any,
                Some('\\') => {
                    atoms.push(Atom::Lit(b"\\".to_vec()));
                    continue;
                }
                Some(o) => {
                    return Err(format!(
                        "unknown escape \\{o}; use \\d \\a \\w \\x \\s \\. or \\\\"
                    ))
                }
                None => return Err("ends with a lone backslash".into()),
            };
            let (min, max) = parse_count(&mut chars)?;
            atoms.push(Atom::Class { class, min, max });
        }
        let p = Pattern {
            atoms,
            case_insensitive,
            whole_word,
        };
        if p.min_len() == 0 {
            return Err("can match the empty string".into());
        }
        Ok(p)
    }

    fn min_len(&self) -> usize {
        self.atoms
            .iter()
            .map(|a| match a {
                Atom::Lit(b) => b.len(),
                Atom::Class { min, .. } => *min,
            })
            .sum()
    }

    /// The longest text a match can span, in bytes (`\.` counted as 4 bytes).
    pub fn max_len(&self) -> usize {
        self.atoms
            .iter()
            .map(|a| match a {
                Atom::Lit(b) => b.len(),
                Atom::Class { class, max, .. } => max * if *class == Class::Any { 4 } else { 1 },
            })
            .sum()
    }

    /// Try to match at byte `i` (a char boundary) of `t`.
    pub fn at(&self, t: &[u8], i: usize) -> Attempt {
        let mut touched = false;
        let no = Attempt {
            end: None,
            touched_end: false,
        };
        if self.whole_word && i > 0 && is_word(t[i - 1]) {
            return no;
        }
        // Most positions fail on the first literal byte: decide those without the matcher.
        if let (Some(Atom::Lit(first)), Some(&b)) = (self.atoms.first(), t.get(i)) {
            let same = if self.case_insensitive {
                b.eq_ignore_ascii_case(&first[0])
            } else {
                b == first[0]
            };
            if !same {
                return no;
            }
        }
        let end = self.step(t, 0, i, &mut touched);
        Attempt {
            end,
            touched_end: touched,
        }
    }

    fn step(&self, t: &[u8], ai: usize, ti: usize, touched: &mut bool) -> Option<usize> {
        let Some(atom) = self.atoms.get(ai) else {
            if self.whole_word {
                match t.get(ti) {
                    None => *touched = true,
                    Some(&b) if is_word(b) => return None,
                    _ => {}
                }
            }
            return Some(ti);
        };
        match atom {
            Atom::Lit(bytes) => {
                let avail = &t[ti..];
                let n = bytes.len().min(avail.len());
                let same = if self.case_insensitive {
                    avail[..n].eq_ignore_ascii_case(&bytes[..n])
                } else {
                    avail[..n] == bytes[..n]
                };
                if !same {
                    return None;
                }
                if n < bytes.len() {
                    *touched = true;
                    return None;
                }
                self.step(t, ai + 1, ti + n, touched)
            }
            Atom::Class { class, min, max } => {
                // Greedy: take as many as allowed, then back off one at a time.
                let mut ends = Vec::with_capacity(*max + 1);
                ends.push(ti);
                let mut j = ti;
                while ends.len() <= *max {
                    let Some(&b) = t.get(j) else {
                        *touched = true;
                        break;
                    };
                    if !class.matches(b) {
                        break;
                    }
                    j += if *class == Class::Any { utf8_len(b) } else { 1 };
                    j = j.min(t.len());
                    ends.push(j);
                }
                for (count, &e) in ends.iter().enumerate().rev() {
                    if count < *min {
                        break;
                    }
                    if let Some(end) = self.step(t, ai + 1, e, touched) {
                        return Some(end);
                    }
                }
                None
            }
        }
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn m(p: &Pattern, s: &str, i: usize) -> (Option<&'static str>, bool) {
        let a = p.at(s.as_bytes(), i);
        let s: &'static str = Box::leak(s.to_owned().into_boxed_str());
        (a.end.map(|e| &s[i..e]), a.touched_end)
    }

    #[test]
    fn classes_and_counts() {
        let p = Pattern::parse(r"EMP-\d{6}", false, true).unwrap();
        assert_eq!(m(&p, "EMP-123456 x", 0), (Some("EMP-123456"), false));
        assert_eq!(m(&p, "EMP-1234567", 0).0, None, "whole word");
        assert_eq!(m(&p, "EMP-12", 0), (None, true), "could continue");
        assert_eq!(m(&p, "EMP-123456", 0), (Some("EMP-123456"), true));
        let p = Pattern::parse(r"acct_\w+", false, false).unwrap();
        assert_eq!(m(&p, "acct_ab_12 rest", 0).0, Some("acct_ab_12"));
        let p = Pattern::parse(r"\x{2,4}-\a?\d", false, false).unwrap();
        assert_eq!(m(&p, "ff0-9", 0).0, Some("ff0-9"));
        assert_eq!(m(&p, "ff0-z9", 0).0, Some("ff0-z9"));
        let p = Pattern::parse(r"a\.b", false, false).unwrap();
        assert_eq!(m(&p, "aéb", 0).0, Some("aéb"));
    }

    #[test]
    fn literals() {
        let p = Pattern::literal("Project Falcon", true, true).unwrap();
        assert_eq!(m(&p, "about project falcon.", 6).0, Some("project falcon"));
        assert_eq!(m(&p, "Project Falconry", 0).0, None);
        assert_eq!(m(&p, "the Project Fal", 4), (None, true));
        assert_eq!(m(&p, "xProject Falcon", 1).0, None);
        let p = Pattern::literal("Zürich", false, false).unwrap();
        assert_eq!(m(&p, "in Zürich", 3).0, Some("Zürich"));
    }

    #[test]
    fn bad_patterns() {
        for (src, want) in [
            (r"\q", "unknown escape"),
            ("x\\", "lone backslash"),
            (r"\d{3", "unclosed"),
            (r"\d{0}", "bad count"),
            (r"\d{5,2}", "bad count"),
            (r"\d*", "empty string"),
        ] {
            let e = Pattern::parse(src, false, false).err().unwrap();
            assert!(e.contains(want), "{src}: {e}");
        }
        assert!(Pattern::literal("", false, false).is_err());
    }
}
