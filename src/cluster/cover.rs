//! A set of NATS subject patterns reduced to one whose patterns do not overlap
//! (a JetStream consumer refuses overlapping filter subjects) and that matches at
//! least every subject the original set matches.
//!
//! Two overlapping patterns become one: the broader one if it contains the
//! other, otherwise a pattern that contains both (`a.*.c` and `a.b.*` →
//! `a.*.*`). Each step removes a pattern, so the loop ends.

/// The non-overlapping cover of `patterns`, sorted.
pub fn cover(patterns: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut set: Vec<String> = patterns.into_iter().collect();
    set.sort();
    set.dedup();
    'again: loop {
        for i in 0..set.len() {
            for j in (i + 1)..set.len() {
                let (Some(a), Some(b)) = (set.get(i), set.get(j)) else {
                    continue;
                };
                if !overlaps(&tokens(a), &tokens(b)) {
                    continue;
                }
                let merged = if contains(&tokens(a), &tokens(b)) {
                    a.clone()
                } else if contains(&tokens(b), &tokens(a)) {
                    b.clone()
                } else {
                    generalize(&tokens(a), &tokens(b))
                };
                set.remove(j);
                set.remove(i);
                set.push(merged);
                set.sort();
                set.dedup();
                continue 'again;
            }
        }
        return set;
    }
}

fn tokens(pattern: &str) -> Vec<&str> {
    pattern.split('.').collect()
}

/// Whether some subject matches both patterns.
fn overlaps(a: &[&str], b: &[&str]) -> bool {
    match (a.split_first(), b.split_first()) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((&">", _)), Some(_)) | (Some(_), Some((&">", _))) => true,
        (Some((x, a)), Some((y, b))) => (*x == "*" || *y == "*" || x == y) && overlaps(a, b),
    }
}

/// Whether every subject `b` matches, `a` matches too.
fn contains(a: &[&str], b: &[&str]) -> bool {
    match (a.split_first(), b.split_first()) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((&">", _)), Some(_)) => true,
        (Some(_), Some((&">", _))) => false,
        (Some((&"*", a)), Some((_, b))) => contains(a, b),
        (Some((x, a)), Some((y, b))) => x == y && contains(a, b),
    }
}

/// A pattern containing both `a` and `b`: equal tokens kept, different ones `*`,
/// and `>` from where either ends in `>` or their lengths part.
fn generalize(a: &[&str], b: &[&str]) -> String {
    let mut out = Vec::new();
    let mut index = 0;
    loop {
        match (a.get(index), b.get(index)) {
            (None, None) => break,
            (Some(&">"), _) | (_, Some(&">")) | (None, Some(_)) | (Some(_), None) => {
                out.push(">");
                break;
            }
            (Some(x), Some(y)) => out.push(if x == y { x } else { "*" }),
        }
        index += 1;
    }
    out.join(".")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn matches(pattern: &str, subject: &str) -> bool {
        let (p, s) = (tokens(pattern), tokens(subject));
        contains(&p, &s)
    }

    #[test]
    fn contained_patterns_fold_into_the_broader_one() {
        let set = ["m.t.a.>", "m.t.a.b", "m.t.a.*"].map(String::from);
        assert_eq!(cover(set), ["m.t.a.>"]);
    }

    #[test]
    fn crossing_patterns_are_generalized() {
        let set = ["m.t.a.*.c", "m.t.a.b.*"].map(String::from);
        assert_eq!(cover(set), ["m.t.a.*.*"]);
    }

    #[test]
    fn disjoint_patterns_stay() {
        let set = ["m.t.a", "m.t.a.>", "m.x"].map(String::from);
        assert_eq!(cover(set), ["m.t.a", "m.t.a.>", "m.x"]);
    }

    fn pattern() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec!["a", "b", "*"]);
        (prop::collection::vec(token, 1..4), any::<bool>()).prop_map(|(mut tokens, tail)| {
            if tail {
                tokens.push(">");
            }
            tokens.join(".")
        })
    }

    fn subject() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..5)
            .prop_map(|tokens| tokens.join("."))
    }

    proptest! {
        #[test]
        fn the_cover_has_no_overlaps_and_loses_no_subject(
            set in prop::collection::vec(pattern(), 0..6),
            subjects in prop::collection::vec(subject(), 0..10),
        ) {
            let covered = cover(set.clone());
            for (i, a) in covered.iter().enumerate() {
                for b in covered.iter().skip(i + 1) {
                    prop_assert!(!overlaps(&tokens(a), &tokens(b)), "{a} and {b}");
                }
            }
            for subject in &subjects {
                if set.iter().any(|p| matches(p, subject)) {
                    prop_assert!(covered.iter().any(|p| matches(p, subject)), "{subject}");
                }
            }
        }
    }
}
