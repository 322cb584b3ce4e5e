//! The config file's JSON Schema, for editors and CI checks.
//!
//! Generated from the raw types the file is read into (`raw`), so it cannot
//! drift from what pollgate accepts: unknown keys are errors in both. It
//! checks the shape (keys, types, units, required keys); what needs the
//! whole file or the machine (an upstream that is named but not defined, a
//! certificate that does not load) is `pollgate check`'s.

use schemars::generate::SchemaSettings;

use super::raw::RawConfig;

/// Where the schema says it lives; editors only use it as an identifier.
const SCHEMA_ID: &str = "https://pollgate.dev/schema/pollgate.schema.json";

/// The schema as JSON Schema draft 7, which YAML editors (yaml-language-server
/// in VS Code, JetBrains) and validators all understand.
pub fn json_schema() -> serde_json::Value {
    let mut schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<RawConfig>();
    schema.insert("$id".into(), SCHEMA_ID.into());
    schema.to_value()
}

#[cfg(test)]
mod tests {
    use super::json_schema;

    #[test]
    fn every_object_refuses_unknown_keys() {
        let schema = json_schema();
        let definitions = schema["definitions"].as_object().into_iter().flatten();
        let objects = std::iter::once(&schema)
            .chain(definitions.map(|(_, d)| d))
            .filter(|d| d["type"] == "object");
        let mut seen = 0;
        for object in objects {
            assert_eq!(object["additionalProperties"], false, "{object}");
            seen += 1;
        }
        assert!(seen > 10, "only {seen} objects in the schema");
    }

    #[test]
    fn routes_are_required_and_a_route_has_one_action() {
        let schema = json_schema();
        assert_eq!(schema["required"], serde_json::json!(["routes"]));
        let route = &schema["definitions"]["RawRoute"];
        assert_eq!(route["required"], serde_json::json!(["prefix"]));
        assert_eq!(route["oneOf"].as_array().map(Vec::len), Some(2));
    }
}
