//! Which event kinds a subscription receives.

/// Most patterns one subscription may list.
pub const MAX_PATTERNS: usize = 100;

/// Longest pattern accepted.
const MAX_PATTERN_LEN: usize = 128;

/// A subscription's event filter: exact kinds (`device.released`) and prefixes ending in `.*`
/// (`setup.*` matches `setup.step.succeeded` but not `setup` or `setuptools.x`); `*` alone, or no
/// pattern at all, matches every event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    all: bool,
    exact: Vec<String>,
    /// Prefixes including their trailing dot.
    prefixes: Vec<String>,
}

/// A segment of a kind: lowercase ASCII letters, digits and `_`, not empty.
fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn kind_ok(s: &str) -> bool {
    s.split('.').all(segment_ok)
}

impl EventFilter {
    /// Parse a list of patterns; the error names the first bad one precisely.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        if patterns.len() > MAX_PATTERNS {
            return Err(format!(
                "events lists {} patterns; at most {MAX_PATTERNS} are allowed",
                patterns.len()
            ));
        }
        let mut f = Self {
            all: patterns.is_empty(),
            ..Self::default()
        };
        for (i, p) in patterns.iter().enumerate() {
            let p = p.as_ref();
            let bad = |why: &str| format!("events[{i}] {p:?} {why}");
            if p.len() > MAX_PATTERN_LEN {
                return Err(bad(&format!("is longer than {MAX_PATTERN_LEN} characters")));
            }
            if p == "*" {
                f.all = true;
            } else if let Some(prefix) = p.strip_suffix(".*") {
                if !kind_ok(prefix) {
                    return Err(bad(
                        "is not a valid prefix: before \".*\" it needs dot-separated segments of lowercase letters, digits and '_'",
                    ));
                }
                f.prefixes.push(format!("{prefix}."));
            } else if p.contains('*') {
                return Err(bad(
                    "uses '*' in the wrong place: only a trailing \".*\" (e.g. \"setup.*\") or \"*\" alone is allowed",
                ));
            } else if kind_ok(p) {
                f.exact.push(p.to_owned());
            } else {
                return Err(bad(
                    "is not an event kind: use dot-separated segments of lowercase letters, digits and '_' (e.g. \"device.released\")",
                ));
            }
        }
        Ok(f)
    }

    /// Whether an event of `kind` passes.
    pub fn matches(&self, kind: &str) -> bool {
        self.all
            || self.exact.iter().any(|k| k == kind)
            || self.prefixes.iter().any(|p| kind.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_kinds_and_prefixes() {
        let f = EventFilter::parse(&["setup.*", "device.released", "dep.device.*"]).unwrap();
        for yes in [
            "setup.step.succeeded",
            "setup.x",
            "device.released",
            "dep.device.added",
            "dep.device.x.y",
        ] {
            assert!(f.matches(yes), "{yes}");
        }
        for no in [
            "setup",
            "setuptools.x",
            "device.released.extra",
            "device.assigned",
            "dep.device",
            "dep.server.created",
            "",
        ] {
            assert!(!f.matches(no), "{no}");
        }
    }

    #[test]
    fn empty_and_star_match_everything() {
        let none: [&str; 0] = [];
        assert!(
            EventFilter::parse(&none)
                .unwrap()
                .matches("anything.at_all")
        );
        let star = EventFilter::parse(&["device.released", "*"]).unwrap();
        assert!(star.matches("command.result"));
    }

    #[test]
    fn refuses_bad_patterns_by_index() {
        let cases = [
            (
                vec!["ok.kind", "Setup.*"],
                "events[1] \"Setup.*\" is not a valid prefix",
            ),
            (
                vec!["setup*"],
                "events[0] \"setup*\" uses '*' in the wrong place",
            ),
            (
                vec!["*.step"],
                "events[0] \"*.step\" uses '*' in the wrong place",
            ),
            (vec!["a..b"], "events[0] \"a..b\" is not an event kind"),
            (vec![""], "events[0] \"\" is not an event kind"),
            (vec![".*"], "events[0] \".*\" is not a valid prefix"),
            (vec!["a.b "], "events[0] \"a.b \" is not an event kind"),
        ];
        for (patterns, want) in cases {
            let err = EventFilter::parse(&patterns).unwrap_err();
            assert!(err.starts_with(want), "{patterns:?}: {err}");
        }
        let long = "a".repeat(129);
        assert!(
            EventFilter::parse(&[long.as_str()])
                .unwrap_err()
                .contains("longer than 128")
        );
        let many = vec!["a"; MAX_PATTERNS + 1];
        assert!(
            EventFilter::parse(&many)
                .unwrap_err()
                .contains("at most 100")
        );
    }
}
