//! Redaction of streamed text across chunks. A pattern may be split over two chunks
//! ("jane.doe@exa" + "mple.com"), so each choice's text that could still grow into a match is
//! held back and sent, redacted, with the next chunk; the last chunk (or a choice's
//! `finish_reason`) flushes it. Held text travels in the `state` bytes because consecutive
//! chunks may reach different plugin instances.
//!
//! State encoding: for each choice with held text, its index (u32 LE), the text's length
//! (u32 LE) and the text.

use switchyard_sdk::{ChunkChoice, StreamChunk};

use crate::redactor::Redactor;

pub fn encode(held: &[(u32, String)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, s) in held {
        v.extend_from_slice(&i.to_le_bytes());
        v.extend_from_slice(&(s.len() as u32).to_le_bytes());
        v.extend_from_slice(s.as_bytes());
    }
    v
}

pub fn decode(mut b: &[u8]) -> Result<Vec<(u32, String)>, String> {
    let mut out = Vec::new();
    let word = |b: &[u8]| -> Option<u32> { Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)) };
    while !b.is_empty() {
        let bad = || "on-chunk: corrupt state".to_owned();
        let index = word(b).ok_or_else(bad)?;
        let len = word(&b[4..]).ok_or_else(bad)? as usize;
        let text = b.get(8..8 + len).ok_or_else(bad)?;
        out.push((index, String::from_utf8(text.to_vec()).map_err(|_| bad())?));
        b = &b[8 + len..];
    }
    Ok(out)
}

/// Process one chunk: the replacement chunk if any text changed, and the new state.
pub fn on_chunk(
    r: &Redactor,
    mut chunk: StreamChunk,
    state: &[u8],
) -> Result<(Option<StreamChunk>, Vec<u8>), String> {
    let mut held = decode(state)?;
    let mut changed = false;
    for c in &mut chunk.choices {
        let prev = match held.iter().position(|(i, _)| *i == c.index) {
            Some(p) => held.swap_remove(p).1,
            None => String::new(),
        };
        let new = c.text.as_deref().unwrap_or("");
        if prev.is_empty() && new.is_empty() {
            continue;
        }
        let mut text = prev;
        text.push_str(new);
        let cut = if chunk.last || c.finish_reason.is_some() {
            text.len()
        } else {
            r.hold_from(&text)
        };
        let emit = r.redact(&text[..cut]).into_owned();
        if cut < text.len() {
            held.push((c.index, text[cut..].to_owned()));
        }
        if emit != new {
            c.text = Some(emit);
            changed = true;
        }
    }
    if chunk.last {
        // Choices that held text but have no part in the last chunk.
        for (index, text) in held.drain(..) {
            chunk.choices.push(ChunkChoice {
                index,
                text: Some(r.redact(&text).into_owned()),
                finish_reason: None,
            });
            changed = true;
        }
    }
    held.sort_by_key(|(i, _)| *i);
    Ok((changed.then_some(chunk), encode(&held)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use switchyard_sdk::testing;

    use super::*;
    use crate::detect::Category;

    /// Feed `parts` as a stream (choice 0) and return what the client sees, chunk by chunk.
    fn run(r: &Redactor, parts: &[&str]) -> Vec<String> {
        let mut state = Vec::new();
        let mut seen = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let chunk = testing::chunk(i as u32, Some(p), last);
            let (out, st) = on_chunk(r, chunk.clone(), &state).unwrap();
            state = st;
            let out = out.unwrap_or(chunk);
            seen.push(out.choices[0].text.clone().unwrap_or_default());
        }
        assert!(state.is_empty(), "everything flushed at the end");
        seen
    }

    fn redactor() -> Redactor {
        Redactor::new(Category::ALL.to_vec(), Vec::new())
    }

    #[test]
    fn pattern_split_over_chunks_is_caught() {
        let r = redactor();
        let seen = run(&r, &["Write to jane.doe@exa", "mple.com today", ""]);
        assert_eq!(seen, ["Write to ", "[REDACTED_EMAIL] ", "today"]);
        let seen = run(&r, &["card 4111 1111", " 1111 1111 thanks"]);
        assert_eq!(seen.concat(), "card [REDACTED_CARD] thanks");
        let seen = run(&r, &["key: sk-proj-Ab3dE", "f6hIj9kLm2nOp5qRs8t", "\nbye"]);
        assert_eq!(seen.concat(), "key: [REDACTED_SECRET]\nbye");
    }

    #[test]
    fn the_last_chunk_flushes() {
        let r = redactor();
        // Ends on a complete email: held until the last (empty, synthetic) chunk.
        let seen = run(&r, &["mail bob@example.com", ""]);
        assert_eq!(seen, ["mail ", "[REDACTED_EMAIL]"]);
        // Held text that turns out harmless comes out unchanged.
        let seen = run(&r, &["the year 2024", " was long", ""]);
        assert_eq!(seen.concat(), "the year 2024 was long");
    }

    #[test]
    fn choices_are_independent_and_flushed_when_missing_from_the_last_chunk() {
        let r = redactor();
        let mut c = testing::chunk(0, Some("a@exam"), false);
        c.choices.push(ChunkChoice {
            index: 1,
            text: Some("b@exam".into()),
            finish_reason: None,
        });
        let (out, state) = on_chunk(&r, c, &[]).unwrap();
        let out = out.unwrap();
        assert_eq!(out.choices[0].text.as_deref(), Some(""));
        assert_eq!(
            decode(&state).unwrap(),
            [(0, "a@exam".into()), (1, "b@exam".into())]
        );
        let mut last = testing::chunk(1, None, true);
        last.choices[0].text = Some("ple.com".into());
        let (out, state) = on_chunk(&r, last, &state).unwrap();
        let out = out.unwrap();
        assert!(state.is_empty());
        let texts: Vec<_> = out
            .choices
            .iter()
            .map(|c| (c.index, c.text.clone().unwrap()))
            .collect();
        assert_eq!(
            texts,
            [(0, "[REDACTED_EMAIL]".to_owned()), (1, "b@exam".to_owned())]
        );
    }

    #[test]
    fn corrupt_state_is_an_error() {
        assert!(decode(&[1, 0, 0, 0, 9, 0, 0, 0, b'x']).is_err());
        assert_eq!(
            decode(&encode(&[(3, "é".into())])).unwrap(),
            [(3, "é".into())]
        );
    }
}
