//! Maps key paths ("routes[2].upstream") to the line they stand on, so a
//! semantic error found after deserialization can still point at its line.
//!
//! serde_yaml reports lines only for shape errors; this walks the same text
//! with yaml-rust2's event parser, which carries a position on every event.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Key path -> 1-based line of the value (or of the key, for a mapping entry).
#[derive(Debug, Default)]
pub struct Lines(HashMap<String, usize>);

impl Lines {
    /// Best effort: a document that does not parse yields an empty map, and
    /// the errors then show without line numbers (serde_yaml has already
    /// reported the syntax error with its own position).
    pub fn of(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut walker, false).is_err() {
            return Lines::default();
        }
        Lines(walker.lines)
    }

    /// The line of `path`, or of its nearest ancestor that is in the file
    /// (a missing key is reported where its parent stands).
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.0.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Mapping { key: Option<String> },
    Sequence { index: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<(String, Frame)>,
    lines: HashMap<String, usize>,
}

impl Walker {
    /// Called when a node starts; returns the node's path if it is a value
    /// (as opposed to a mapping key), advancing the parent's position.
    fn enter_node(&mut self, scalar: Option<&str>) -> Option<String> {
        let Some((parent, frame)) = self.stack.last_mut() else {
            return Some(String::new());
        };
        match frame {
            Frame::Mapping { key } => match key.take() {
                None => {
                    // This node is a key; remember it for the value that follows.
                    *key = Some(scalar.unwrap_or_default().to_owned());
                    None
                }
                Some(k) => Some(join(parent, &k)),
            },
            Frame::Sequence { index } => {
                let path = format!("{parent}[{index}]");
                *index += 1;
                Some(path)
            }
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(path) = self.enter_node(Some(&value)) {
                    self.lines.entry(path).or_insert(mark.line());
                } else if let Some((parent, _)) = self.stack.last() {
                    // A key: its line stands for the entry until the value is seen.
                    let path = join(parent, &value);
                    self.lines.entry(path).or_insert(mark.line());
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                let path = self.enter_node(None).unwrap_or_default();
                self.lines.entry(path.clone()).or_insert(mark.line());
                let frame = if is_map {
                    Frame::Mapping { key: None }
                } else {
                    Frame::Sequence { index: 0 }
                };
                self.stack.push((path, frame));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                self.enter_node(None);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "listen: \"0.0.0.0:8080\"\nupstreams:\n  app: { url: \"http://x\" }\nroutes:\n  - prefix: /a\n    upstream: app\n  - { prefix: /b, upstream: nope }\n";

    #[test]
    fn finds_nested_keys_in_block_and_flow_style() {
        let lines = Lines::of(DOC);
        assert_eq!(lines.line("listen"), Some(1));
        assert_eq!(lines.line("upstreams.app.url"), Some(3));
        assert_eq!(lines.line("routes[0].upstream"), Some(6));
        assert_eq!(lines.line("routes[1].upstream"), Some(7));
    }

    #[test]
    fn a_missing_key_points_at_its_parent() {
        let lines = Lines::of(DOC);
        assert_eq!(lines.line("routes[1].timeout"), Some(7));
        assert_eq!(lines.line("nothing.here"), None);
    }
}
