//! Pomona policy plugin: assign enrollment profiles to Apple Business Manager devices by rules.
//!
//! The rules are the plugin's configuration values:
//!
//! | key               | matches a device whose …                                  |
//! |-------------------|-----------------------------------------------------------|
//! | `serial.<prefix>` | serial number starts with `<prefix>` (longest wins)       |
//! | `model.<prefix>`  | model starts with `<prefix>`, any case (longest wins)     |
//! | `family.<family>` | device family is `<family>`, any case (`Mac`, `iPad`, …)  |
//! | `server.<name>`   | DEP server (token) is `<name>`                            |
//! | `default`         | anything                                                  |
//!
//! The first kind of rule that matches decides, in the order of the table. Its value is the name of
//! an enrollment profile to assign, or `@skip` to leave the device alone. A device no rule matches
//! gets no opinion, so the next plugin or the engine's default decides.
//!
//! `when` says which events the rules answer: `new` (the default) answers devices newly added to
//! the server, and devices listed by a fetch or a change that the engine had not seen or whose
//! profile was removed; `always` answers every event but `deleted`. Other events get no opinion.

use pomona_sdk::{AssignDecision, DepEvent, Hook, OpType, Plugin, export_plugin, host};
use std::sync::OnceLock;

/// The parsed rules.
#[derive(Debug, Default, PartialEq)]
pub struct Rules {
    serial: Vec<(String, Answer)>,
    model: Vec<(String, Answer)>,
    family: Vec<(String, Answer)>,
    server: Vec<(String, Answer)>,
    default: Option<Answer>,
    always: bool,
}

/// What a rule decides.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Assign(String),
    Skip,
}

impl Rules {
    /// Parse configuration `(key, value)` pairs; unknown keys and empty values are errors.
    pub fn parse<I: IntoIterator<Item = (String, String)>>(config: I) -> Result<Rules, String> {
        let mut rules = Rules::default();
        for (key, value) in config {
            if key == "when" {
                rules.always = match value.as_str() {
                    "new" => false,
                    "always" => true,
                    other => {
                        return Err(format!("when = {other:?}: expected \"new\" or \"always\""));
                    }
                };
                continue;
            }
            let answer = match value.as_str() {
                "" => return Err(format!("{key} has an empty profile name")),
                "@skip" => Answer::Skip,
                name => Answer::Assign(name.to_owned()),
            };
            let (kind, pattern) = key.split_once('.').unwrap_or((key.as_str(), ""));
            let table = match kind {
                "default" if pattern.is_empty() => {
                    rules.default = Some(answer);
                    continue;
                }
                "serial" => &mut rules.serial,
                "model" => &mut rules.model,
                "family" => &mut rules.family,
                "server" => &mut rules.server,
                _ => {
                    return Err(format!(
                        "unknown configuration key {key:?}: expected serial.<prefix>, model.<prefix>, family.<family>, server.<name>, default or when"
                    ));
                }
            };
            if pattern.is_empty() {
                return Err(format!("{key} needs a pattern after the dot"));
            }
            let pattern = if kind == "serial" || kind == "server" {
                pattern.to_owned()
            } else {
                pattern.to_lowercase()
            };
            table.push((pattern, answer));
        }
        // Longest prefix first, so the most specific rule wins.
        for table in [&mut rules.serial, &mut rules.model] {
            table.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
        Ok(rules)
    }

    /// The decision for `event`, or `None` when no rule applies.
    pub fn decide(&self, event: &DepEvent) -> Option<AssignDecision> {
        if !self.answers(event) {
            return None;
        }
        let model = event.model.to_lowercase();
        let family = event.device_family.to_lowercase();
        let answer = None
            .or_else(|| prefix_match(&self.serial, &event.serial_number))
            .or_else(|| prefix_match(&self.model, &model))
            .or_else(|| exact_match(&self.family, &family))
            .or_else(|| exact_match(&self.server, &event.server))
            .or(self.default.as_ref())?;
        Some(match answer {
            Answer::Assign(p) => AssignDecision::Assign(p.clone()),
            Answer::Skip => AssignDecision::Skip,
        })
    }

    fn answers(&self, event: &DepEvent) -> bool {
        match event.op_type {
            OpType::Deleted => false,
            OpType::Added => true,
            OpType::Fetched | OpType::Modified => {
                self.always || !event.known || event.profile_status == "removed"
            }
        }
    }
}

fn prefix_match<'a>(table: &'a [(String, Answer)], value: &str) -> Option<&'a Answer> {
    table
        .iter()
        .find(|(prefix, _)| value.starts_with(prefix.as_str()))
        .map(|(_, a)| a)
}

fn exact_match<'a>(table: &'a [(String, Answer)], value: &str) -> Option<&'a Answer> {
    table.iter().find(|(v, _)| v == value).map(|(_, a)| a)
}

/// The plugin: rules are read from the configuration on the first call.
pub struct AutoAssignRules;

impl Plugin for AutoAssignRules {
    fn hooks() -> Vec<Hook> {
        vec![Hook::AutoAssign]
    }

    fn auto_assign(event: DepEvent) -> Result<Option<AssignDecision>, String> {
        static RULES: OnceLock<Result<Rules, String>> = OnceLock::new();
        let rules = RULES.get_or_init(|| {
            let config = host::config_keys()
                .into_iter()
                .filter_map(|k| host::config(&k).map(|v| (k, v)));
            Rules::parse(config)
        });
        Ok(rules.as_ref()?.decide(&event))
    }
}

export_plugin!(AutoAssignRules);

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pairs: &[(&str, &str)]) -> Rules {
        Rules::parse(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    fn event(serial: &str, model: &str, family: &str, op: OpType, known: bool) -> DepEvent {
        DepEvent {
            server: "hq".into(),
            serial_number: serial.into(),
            model: model.into(),
            description: String::new(),
            color: String::new(),
            device_family: family.into(),
            os: String::new(),
            profile_status: "empty".into(),
            profile_uuid: None,
            op_type: op,
            op_date: None,
            known,
            team: None,
        }
    }

    fn assign(p: &str) -> Option<AssignDecision> {
        Some(AssignDecision::Assign(p.into()))
    }

    #[test]
    fn most_specific_rule_wins() {
        let r = rules(&[
            ("serial.C02", "serial-short"),
            ("serial.C02X", "serial-long"),
            ("model.macbook", "laptops"),
            ("model.MacBook Pro", "pros"),
            ("family.mac", "macs"),
            ("server.hq", "hq"),
            ("default", "everyone"),
        ]);
        let added = |s, m, f| r.decide(&event(s, m, f, OpType::Added, false));
        assert_eq!(added("C02X1", "iMac", "Mac"), assign("serial-long"));
        assert_eq!(added("C02A1", "iMac", "Mac"), assign("serial-short"));
        assert_eq!(added("F1", "MacBook Pro 14\"", "Mac"), assign("pros"));
        assert_eq!(added("F1", "MacBook Air", "Mac"), assign("laptops"));
        assert_eq!(added("F1", "iMac", "Mac"), assign("macs"));
        assert_eq!(added("F1", "iPad Pro", "iPad"), assign("hq"));
    }

    #[test]
    fn skip_and_no_opinion() {
        let r = rules(&[("family.AppleTV", "@skip"), ("family.Mac", "macs")]);
        let e = event("X", "Apple TV 4K", "AppleTV", OpType::Added, false);
        assert_eq!(r.decide(&e), Some(AssignDecision::Skip));
        let e = event("X", "iPhone 16", "iPhone", OpType::Added, false);
        assert_eq!(r.decide(&e), None, "no rule matches");
    }

    #[test]
    fn only_new_devices_unless_always() {
        let r = rules(&[("default", "p")]);
        let known = event("X", "iMac", "Mac", OpType::Modified, true);
        assert_eq!(r.decide(&known), None);
        let mut removed = known.clone();
        removed.profile_status = "removed".into();
        assert_eq!(r.decide(&removed), assign("p"));
        assert_eq!(
            r.decide(&event("X", "", "", OpType::Fetched, false)),
            assign("p")
        );
        assert_eq!(r.decide(&event("X", "", "", OpType::Deleted, false)), None);
        let always = rules(&[("default", "p"), ("when", "always")]);
        assert_eq!(always.decide(&known), assign("p"));
        assert_eq!(
            always.decide(&event("X", "", "", OpType::Deleted, true)),
            None
        );
    }

    #[test]
    fn bad_configuration_is_a_precise_error() {
        let parse = |k: &str, v: &str| Rules::parse([(k.to_string(), v.to_string())]).unwrap_err();
        assert!(parse("colour.red", "x").contains("unknown configuration key \"colour.red\""));
        assert!(parse("serial.", "x").contains("needs a pattern"));
        assert!(parse("model.iMac", "").contains("empty profile name"));
        assert!(parse("when", "sometimes").contains("expected \"new\" or \"always\""));
    }
}
