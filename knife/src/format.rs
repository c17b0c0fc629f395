//! The three ways `-F` prints a document. [`text`] is knife's text output (ops.md §7.1):
//! Chef's `TextFormatter`, byte for byte, so scripts that parse `knife job status` keep
//! working. [`json`] is pretty JSON; [`yaml`] is YAML as `knife -F yaml` prints it (a
//! `---` document), for people who pipe knife into YAML tools.
//!
//! Text: hashes print one key per line, sorted, the value at column (longest key + 2); a
//! one-element list of a plain value prints inline; nested hashes and lists go on their own
//! lines indented two spaces; lists of hashes are separated by a blank line. Pure.

use serde_json::Value;

/// `data` as pretty JSON, ending in a newline.
pub fn json(data: &Value) -> String {
    // A Value has only string keys and finite numbers: it always serialises.
    let mut out = serde_json::to_string_pretty(data).expect("a Value always serialises");
    out.push('\n');
    out
}

/// `data` as one YAML document, `---` first as Ruby's `to_yaml` (and so knife) writes it.
pub fn yaml(data: &Value) -> String {
    // A Value has only string keys and finite numbers: it always serialises.
    let body = serde_saphyr::to_string(data).expect("a Value always serialises");
    let mut out = String::from("---\n");
    out.push_str(body.strip_prefix("---\n").unwrap_or(&body));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `data` as knife prints it.
pub fn text(data: &Value) -> String {
    let mut out = String::new();
    write(data, &mut out);
    out
}

fn is_singleton(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn write(data: &Value, out: &mut String) {
    match data {
        Value::Object(map) => {
            let width = map.keys().map(|k| k.chars().count()).max().unwrap_or(0) + 1;
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (key, value) in entries {
                let value = match value {
                    Value::Array(items) if items.len() == 1 && is_singleton(&items[0]) => &items[0],
                    v => v,
                };
                if is_singleton(value) {
                    let k = format!("{key}:");
                    out.push_str(&format!("{k:<width$} {}\n", scalar(value)));
                } else {
                    out.push_str(&format!("{key}:\n"));
                    for line in text(value).lines() {
                        out.push_str(&format!("  {line}\n"));
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                write(item, out);
                if !is_singleton(item) && i + 1 != items.len() {
                    out.push('\n');
                }
            }
        }
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_prints_like_knife_job_status() {
        // ops.md §7.2 example.
        let job = json!({
            "nodes": {"failed": ["node1"]},
            "id": "3b8281fa69662b40f841480f776cbfa5",
            "command": "chef_client",
            "status": "complete",
            "run_timeout": 3600,
            "created_at": "Fri, 14 Feb 2020 17:48:07 GMT",
            "updated_at": "Fri, 14 Feb 2020 17:48:20 GMT",
            "env": {},
        });
        assert_eq!(
            text(&job),
            "command:     chef_client\n\
             created_at:  Fri, 14 Feb 2020 17:48:07 GMT\n\
             env:\n\
             id:          3b8281fa69662b40f841480f776cbfa5\n\
             nodes:\n\
             \x20 failed: node1\n\
             run_timeout: 3600\n\
             status:      complete\n\
             updated_at:  Fri, 14 Feb 2020 17:48:20 GMT\n"
        );
    }

    #[test]
    fn lists_and_nested_values() {
        let v =
            json!({"nodes": {"succeeded": ["a", "b"], "nacked": ["c"]}, "capture_output": true});
        assert_eq!(
            text(&v),
            "capture_output: true\nnodes:\n  nacked:    c\n  succeeded:\n    a\n    b\n"
        );
        let list = json!([{"id": "1"}, {"id": "2"}]);
        assert_eq!(text(&list), "id: 1\n\nid: 2\n");
        assert_eq!(text(&json!(["a", "b"])), "a\nb\n");
        assert_eq!(text(&json!([])), "");
    }

    /// A job as `job status` gets it, with the shapes that trip YAML emitters: strings
    /// that look like numbers, booleans or nulls, a colon, a leading dash, unicode, an
    /// empty map and list, nested lists of maps.
    fn awkward_document() -> Value {
        json!({
            "id": "3b8281fa69662b40f841480f776cbfa5",
            "command": "echo 'a: b' && ls -l # not a comment",
            "status": "complete",
            "run_timeout": 3600,
            "quorum": 0.5,
            "capture_output": false,
            "env": {},
            "dir": null,
            "file": "",
            "look_alikes": ["123", "true", "null", "~", "yes", "1e3", "-x", "0x1f", "@at", "*star"],
            "multi_line": "line 1\nline 2\n",
            "unicode": "nœud é ☃",
            "nodes": {"succeeded": ["node1", "node-2"], "failed": [], "crashed": ["n:3"]},
            "list_of_maps": [{"a": 1}, {"b": [true, null]}],
        })
    }

    #[test]
    fn yaml_and_json_print_the_same_document() {
        let doc = awkward_document();
        let from_json: Value = serde_json::from_str(&json(&doc)).unwrap();
        let yaml_text = yaml(&doc);
        let from_yaml: Value = serde_saphyr::from_str(&yaml_text).unwrap();
        assert_eq!(from_json, doc);
        assert_eq!(from_yaml, doc, "{yaml_text}");
        for other in [
            json!([]),
            json!({}),
            json!("just text"),
            json!([{"id": "1"}, {"id": "2"}]),
        ] {
            let back: Value = serde_saphyr::from_str(&yaml(&other)).unwrap();
            assert_eq!(back, other, "{}", yaml(&other));
        }
    }

    #[test]
    fn yaml_is_one_document_like_knifes() {
        let text = yaml(&json!({"status": "complete", "id": "abc"}));
        assert!(text.starts_with("---\n"), "{text}");
        assert_eq!(text.matches("---").count(), 1, "{text}");
        assert!(text.contains("status: complete\n"), "{text}");
        assert!(text.ends_with('\n'));
        assert!(json(&json!({"a": 1})).ends_with("}\n"));
    }
}
