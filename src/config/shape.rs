//! The file's shape, every fault of it in one run.
//!
//! serde stops at the first key it does not know or value it cannot parse,
//! so a file with a typo'd key and a bad duration used to report one of the
//! two. Here the text is read into a YAML tree once, then deserialized into
//! the raw schema again and again: each time serde stops, the fault is noted
//! with its key path, the node at fault (a key, or one item of a list) is
//! taken out of the tree, and the next try goes past it. Every raw key is
//! optional (see `raw`), so taking one out never makes a new fault; what the
//! taking out hides from the semantic checks is reported by `removed`, so
//! they can keep quiet about it, and `shifts` maps the paths of what is left
//! back to the file's own indices.

use std::collections::HashMap;

use serde_path_to_error::Segment;
use serde_yaml::{Mapping, Value};

use super::raw::RawConfig;

/// Faults noted before the file is given up on: a file with more is not a
/// config with typos but something else, and the list would not help.
const MAX_FAULTS: usize = 50;

/// One shape fault: where, and what serde said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fault {
    /// Key path, such as `routes[2].timeout`.
    pub path: String,
    pub message: String,
}

/// What the shape pass found.
pub(super) struct Shaped {
    /// The file without the parts at fault; `None` only past `MAX_FAULTS`
    /// or when a fault could not be taken out (the whole document is of
    /// the wrong type).
    pub raw: Option<RawConfig>,
    pub faults: Vec<Fault>,
    /// Paths taken out of the tree (map keys and list items), as the file
    /// has them.
    pub removed: Vec<String>,
    /// How list items moved when others were taken out before them.
    pub shifts: Shifts,
}

/// List items taken out: per list (its path in the file), the indices in
/// the file of the items removed. Paths into what is left are translated
/// back with [`Shifts::original`], so every error names the item the
/// operator wrote.
#[derive(Debug, Default)]
pub(super) struct Shifts(HashMap<String, Vec<usize>>);

impl Shifts {
    /// The index in the file of item `index` of what is left of `list`.
    fn index(&self, list: &str, index: usize) -> usize {
        let mut original = index;
        for &gone in self.0.get(list).into_iter().flatten() {
            if gone <= original {
                original += 1;
            }
        }
        original
    }

    fn remove(&mut self, list: String, original: usize) {
        let gone = self.0.entry(list).or_default();
        gone.push(original);
        gone.sort_unstable();
    }

    /// `routes[0].upstream` of what is left, as the file has it (say
    /// `routes[1].upstream` when `routes[0]` was taken out).
    pub fn original(&self, path: &str) -> String {
        let mut out = String::new();
        for part in path.split('.') {
            let (key, indices) = match part.find('[') {
                Some(at) => (&part[..at], &part[at..]),
                None => (part, ""),
            };
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
            for index in indices
                .split(['[', ']'])
                .filter(|i| !i.is_empty())
                .filter_map(|i| i.parse::<usize>().ok())
            {
                let original = self.index(&out, index);
                out.push_str(&format!("[{original}]"));
            }
        }
        out
    }

    /// serde's segments, as the file has them.
    fn render(&self, segments: &[Segment]) -> String {
        let mut out = String::new();
        for s in segments {
            match s {
                Segment::Seq { index } => {
                    let original = self.index(&out, *index);
                    out.push_str(&format!("[{original}]"));
                }
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Unknown => {}
            }
        }
        out
    }
}

/// Deserializes `tree` into the raw schema, noting and removing every fault.
pub(super) fn read(mut tree: Value) -> Shaped {
    let mut faults = Vec::new();
    let mut removed = Vec::new();
    let mut shifts = Shifts::default();
    while faults.len() < MAX_FAULTS {
        let error = match serde_path_to_error::deserialize::<_, RawConfig>(tree.clone()) {
            Ok(raw) => {
                return Shaped {
                    raw: Some(raw),
                    faults,
                    removed,
                    shifts,
                }
            }
            Err(e) => e,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let path = shifts.render(&segments);
        faults.push(Fault {
            path: path.clone(),
            message: plain(error.into_inner().to_string()),
        });
        // The node at fault goes: a key from its map, an item from its
        // list (the list's other items stay, and are checked).
        let Some((last, parents)) = segments.split_last() else {
            break;
        };
        if let Segment::Seq { index } = last {
            let list = shifts.render(parents);
            let original = shifts.index(&list, *index);
            if !remove(&mut tree, &segments) {
                break;
            }
            shifts.remove(list, original);
        } else if !remove(&mut tree, &segments) {
            break;
        }
        removed.push(path);
    }
    Shaped {
        raw: None,
        faults,
        removed,
        shifts,
    }
}

/// Removes the node `path` leads to (a key from its mapping, an item from
/// its sequence); false when the path does not lead there.
fn remove(tree: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = tree;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Mapping(map)) => match find(map, key) {
                Some(k) => match map.get_mut(&k) {
                    Some(v) => v,
                    None => return false,
                },
                None => return false,
            },
            (Segment::Seq { index }, Value::Sequence(items)) => match items.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Mapping(map)) => match find(map, key) {
            Some(k) => map.remove(&k).is_some(),
            None => false,
        },
        (Segment::Seq { index }, Value::Sequence(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

/// The mapping's key that serde names `key` (YAML keys need not be strings).
fn find(map: &Mapping, key: &str) -> Option<Value> {
    map.keys()
        .find(|k| match k {
            Value::String(s) => s == key,
            Value::Number(n) => n.to_string() == key,
            Value::Bool(b) => b.to_string() == key,
            _ => false,
        })
        .cloned()
}

/// Whether `a` and `b` are the same key path or one lies under the other.
pub(super) fn overlaps(a: &str, b: &str) -> bool {
    let under = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    under(a, b) || under(b, a)
}

/// serde names the Rust type it expected ("expected struct RawPoll",
/// "expected usize"); the operator wrote YAML, where that is a mapping or a
/// whole number.
fn plain(message: String) -> String {
    let message = message
        .replace("expected usize", "expected a whole number")
        .replace("expected u64", "expected a whole number");
    let Some(at) = message.find("struct Raw") else {
        return message;
    };
    let rest = &message[at + "struct ".len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    format!("{}a mapping{}", &message[..at], &rest[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_names_yaml_not_rust_types() {
        let f = faults("poll: 5\nroutes: []\n");
        assert_eq!(
            f,
            [(
                "poll".to_owned(),
                "invalid type: integer `5`, expected a mapping".to_owned()
            )]
        );
    }

    fn faults(text: &str) -> Vec<(String, String)> {
        let shaped = read(serde_yaml::from_str(text).unwrap());
        shaped
            .faults
            .into_iter()
            .map(|f| (f.path, f.message))
            .collect()
    }

    #[test]
    fn every_unknown_key_and_bad_value_is_found_in_one_pass() {
        let f = faults(
            "colour: red\nroutes:\n  - { prefix: /a/, timeout: 30, shade: x }\n  - { prefix: /b/, methods: [GET, [1]] }\nbroker: { kind: nope }\n",
        );
        let mut paths: Vec<&str> = f.iter().map(|(p, _)| p.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "broker.kind",
                "colour",
                "routes[0].shade",
                "routes[0].timeout",
                "routes[1].methods[1]",
            ]
        );
        let message = |path: &str| &f.iter().find(|(p, _)| p == path).unwrap().1;
        assert!(
            message("colour").contains("unknown field `colour`"),
            "{f:?}"
        );
        assert!(message("routes[0].timeout").contains("add a unit"), "{f:?}");
    }

    #[test]
    fn a_clean_file_has_no_faults_and_what_was_removed_is_known() {
        let shaped =
            read(serde_yaml::from_str("routes:\n  - { prefix: /a/, poll: {} }\n").unwrap());
        assert!(shaped.faults.is_empty() && shaped.raw.is_some());
        let shaped = read(serde_yaml::from_str("routes: 5\nlisten: x\n").unwrap());
        assert_eq!(shaped.removed, ["routes"]);
        assert!(shaped.raw.is_some(), "the rest is still read");
    }

    #[test]
    fn a_document_of_the_wrong_type_is_one_fault() {
        let shaped = read(serde_yaml::from_str("- a\n- b\n").unwrap());
        assert_eq!(shaped.faults.len(), 1);
        assert!(shaped.raw.is_none());
    }

    #[test]
    fn a_bad_list_item_goes_alone_and_later_items_keep_their_own_indices() {
        let text = "routes:\n  - 5\n  - { prefix: /a/, timeout: 30 }\n  - 7\n  - { prefix: /b/, shade: x }\ntrusted_proxies: [\"ok\", [1], [2], \"ok\"]\n";
        let shaped = read(serde_yaml::from_str(text).unwrap());
        let mut paths: Vec<String> = shaped.faults.iter().map(|f| f.path.clone()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "routes[0]",
                "routes[1].timeout",
                "routes[2]",
                "routes[3].shade",
                "trusted_proxies[1]",
                "trusted_proxies[2]",
            ]
        );
        // What is left is two routes; the second of them was the file's fourth.
        let raw = shaped.raw.unwrap();
        assert_eq!(raw.routes.len(), 2);
        assert_eq!(
            shaped.shifts.original("routes[1].upstream"),
            "routes[3].upstream"
        );
        assert_eq!(shaped.shifts.original("routes[0]"), "routes[1]");
        assert_eq!(
            shaped.shifts.original("trusted_proxies[1]"),
            "trusted_proxies[3]"
        );
        assert_eq!(shaped.shifts.original("listen"), "listen");
    }

    #[test]
    fn overlapping_paths() {
        assert!(overlaps("upstreams.app.url", "upstreams.app"));
        assert!(overlaps("routes", "routes[0].prefix"));
        assert!(overlaps("a.b", "a.b"));
        assert!(!overlaps("routes[1]", "routes[10]"));
        assert!(!overlaps("upstreams.app", "upstreams.apple"));
    }
}
