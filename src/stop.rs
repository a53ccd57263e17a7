//! Stop strings matched on generated text across token boundaries.
//!
//! Text is pushed as it is decoded; what can be released is returned at once, except a tail that
//! could still be the start of a stop string, which is held back until the next push decides it.
//! When a stop string completes, the text before it is released and the rest is dropped.

/// Matches stop strings on a stream of text.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    /// The non-empty stop strings with their index in the caller's list.
    stops: Vec<(usize, String)>,
    /// Text not yet released (always shorter than the longest stop string, between pushes).
    held: String,
}

/// What a push decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Text that is final.
    pub text: String,
    /// Index (in the list given to [`StopMatcher::new`]) of the stop string that matched, if one
    /// did (then no more text follows).
    pub stopped: Option<usize>,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.is_empty())
                .map(|(i, s)| (i, s.clone()))
                .collect(),
            held: String::new(),
        }
    }

    /// Adds `piece` and returns what is now final.
    pub fn push(&mut self, piece: &str) -> Released {
        self.held.push_str(piece);
        // The first stop string to be complete wins (the earliest end), so the result does not
        // depend on how the text is cut into pieces; at one end, the longer (earlier start),
        // then the first listed.
        let hit = self
            .stops
            .iter()
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|at| (at + s.len(), at, *i)))
            .min();
        if let Some((_, at, i)) = hit {
            let text = self.held[..at].to_owned();
            self.held.clear();
            return Released {
                text,
                stopped: Some(i),
            };
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|(_, s)| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let text = self.held[..keep].to_owned();
        self.held.drain(..keep);
        Released {
            text,
            stopped: None,
        }
    }

    /// Releases whatever is held (generation ended without a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let r = m.push(p);
            out.push_str(&r.text);
            if r.stopped.is_some() {
                return (out, r.stopped);
            }
        }
        out.push_str(&m.finish());
        (out, None)
    }

    #[test]
    fn matches_across_pieces_and_drops_the_stop_string() {
        assert_eq!(
            run(&["\n\n"], &["Hello", " world\n", "\nmore"]),
            ("Hello world".into(), Some(0))
        );
        assert_eq!(run(&["END"], &["aE", "N", "Dz"]), ("a".into(), Some(0)));
    }

    #[test]
    fn releases_false_starts_and_holds_only_possible_prefixes() {
        let stops = vec!["abc".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("xab").text, "x");
        assert_eq!(m.push("d").text, "abd");
        assert_eq!(run(&["abc"], &["ab", "ab", "x"]), ("ababx".into(), None));
    }

    #[test]
    fn first_completed_match_wins_and_multibyte_text_is_safe() {
        assert_eq!(run(&["lo", "el"], &["hello"]), ("h".into(), Some(1)));
        // However the text is cut: "c" is complete before "abcd" is.
        for pieces in [
            &["abcd"][..],
            &["abc", "d"],
            &["ab", "cd"],
            &["a", "b", "c", "d"],
        ] {
            assert_eq!(
                run(&["abcd", "c"], pieces),
                ("ab".into(), Some(1)),
                "{pieces:?}"
            );
        }
        // Stops that end together: the longer one.
        assert_eq!(run(&["bc", "abc"], &["xab", "c"]), ("x".into(), Some(1)));
        assert_eq!(run(&["é!"], &["café", "!x"]), ("caf".into(), Some(0)));
        assert_eq!(run(&[], &["naïve"]), ("naïve".into(), None));
    }
}
