//! Key choice: a weighted random pick among the provider's keys that serve the model, per
//! attempt, so a retry may land on another key.

use rand::Rng;

use crate::config::KeyConfig;

/// The index of a key serving `model`, drawn with probability proportional to its weight;
/// `None` when no key serves it.
pub fn pick<'a>(keys: impl Iterator<Item = &'a KeyConfig> + Clone, model: &str) -> Option<usize> {
    let serving = keys.enumerate().filter(|(_, k)| k.serves(model));
    let total: f64 = serving.clone().map(|(_, k)| k.weight).sum();
    if total <= 0.0 {
        return None;
    }
    let mut point = rand::rng().random_range(0.0..total);
    let mut last = None;
    for (i, key) in serving {
        if point < key.weight {
            return Some(i);
        }
        point -= key.weight;
        last = Some(i);
    }
    // Floating-point rounding can leave `point` a hair above the last weight.
    last
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn keys(spec: &[(&[&str], f64)]) -> Vec<KeyConfig> {
        spec.iter()
            .map(|(models, weight)| KeyConfig {
                value: Secret::new("k"),
                models: models.iter().map(|m| m.to_string()).collect(),
                weight: *weight,
            })
            .collect()
    }

    #[test]
    fn key_shares_follow_weights_over_10000_picks() {
        let ks = keys(&[
            (&[], 0.5),
            (&["gpt-4o"], 0.3),
            (&[], 0.2),
            (&["other"], 10.0),
        ]);
        let mut counts = [0usize; 4];
        for _ in 0..10_000 {
            counts[pick(ks.iter(), "gpt-4o").unwrap()] += 1;
        }
        assert_eq!(
            counts[3], 0,
            "a key that does not list the model was picked"
        );
        for (i, want) in [(0, 0.5), (1, 0.3), (2, 0.2)] {
            let share = counts[i] as f64 / 10_000.0;
            assert!(
                (share - want).abs() < 0.02,
                "key {i}: share {share}, weight {want}"
            );
        }
    }

    #[test]
    fn no_serving_key() {
        let ks = keys(&[(&["gpt-4o"], 1.0)]);
        assert_eq!(pick(ks.iter(), "gpt-5"), None);
        assert_eq!(pick([].iter(), "gpt-5"), None);
    }
}
