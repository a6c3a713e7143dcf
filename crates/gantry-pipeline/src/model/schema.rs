//! A JSON Schema (draft-07) of the pipeline file, for editors. It describes the same keys
//! that [`super::build`] accepts; a test checks that every job keyword is in it.

use serde_json::{Value, json};

fn string_or_list() -> Value {
    json!({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})
}

fn script() -> Value {
    json!({"anyOf": [{"type": "string"}, {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "array"}]}}]})
}

fn when(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

fn variables() -> Value {
    json!({
        "type": "object",
        "additionalProperties": {"anyOf": [
            {"type": ["string", "number"]},
            {"type": "object", "properties": {
                "value": {"type": "string"}, "description": {"type": "string"},
                "options": {"type": "array", "items": {"type": "string"}}, "expand": {"type": "boolean"}
            }, "additionalProperties": false}
        ]}
    })
}

fn rules(job_level: bool) -> Value {
    let mut props = json!({
        "if": {"type": "string", "description": "An expression: $VAR == \"value\", =~ /regex/, &&, ||"},
        "changes": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "object", "properties": {"paths": {"type": "array", "items": {"type": "string"}}, "compare_to": {"type": "string"}}}]},
        "exists": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "object", "properties": {"paths": {"type": "array", "items": {"type": "string"}}}}]},
        "variables": variables(),
    });
    if job_level {
        props["when"] = when(&[
            "on_success",
            "on_failure",
            "always",
            "never",
            "manual",
            "delayed",
        ]);
        props["allow_failure"] = json!({"type": "boolean"});
        props["needs"] = json!({"type": "array"});
        props["start_in"] = json!({"type": "string"});
        props["interruptible"] = json!({"type": "boolean"});
    } else {
        props["when"] = when(&["always", "never"]);
        props["auto_cancel"] = json!({"type": "object"});
    }
    json!({"type": "array", "items": {"type": "object", "properties": props, "additionalProperties": false}})
}

fn image() -> Value {
    json!({"anyOf": [{"type": "string"}, {"type": "object", "properties": {
        "name": {"type": "string"}, "entrypoint": {"type": "array", "items": {"type": "string"}},
        "pull_policy": {"anyOf": [{"type": "string", "enum": ["always", "if-not-present", "never"]}, {"type": "array", "items": {"type": "string", "enum": ["always", "if-not-present", "never"]}}]},
        "docker": {"type": "object"}, "kubernetes": {"type": "object"}
    }, "required": ["name"]}]})
}

fn job_properties() -> Value {
    json!({
        "script": script(), "before_script": script(), "after_script": script(),
        "stage": {"type": "string"},
        "image": image(),
        "services": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "object", "properties": {
            "name": {"type": "string"}, "alias": {"type": "string"}, "entrypoint": {"type": "array"},
            "command": {"type": "array"}, "variables": variables(), "pull_policy": {}
        }, "required": ["name"]}]}},
        "variables": variables(),
        "tags": string_or_list(),
        "rules": rules(true),
        "only": {"anyOf": [string_or_list(), {"type": "object"}]},
        "except": {"anyOf": [string_or_list(), {"type": "object"}]},
        "when": when(&["on_success", "on_failure", "always", "never", "manual", "delayed"]),
        "start_in": {"type": "string"},
        "allow_failure": {"anyOf": [{"type": "boolean"}, {"type": "object", "properties": {"exit_codes": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]}}}]},
        "needs": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "object", "properties": {
            "job": {"type": "string"}, "artifacts": {"type": "boolean"}, "optional": {"type": "boolean"},
            "parallel": {"type": "object"}, "project": {"type": "string"}, "ref": {"type": "string"}, "pipeline": {"type": "string"}
        }}]}},
        "dependencies": {"type": "array", "items": {"type": "string"}},
        "artifacts": {"type": "object", "properties": {
            "name": {"type": "string"}, "paths": {"type": "array", "items": {"type": "string"}},
            "exclude": {"type": "array", "items": {"type": "string"}}, "untracked": {"type": "boolean"},
            "when": when(&["on_success", "on_failure", "always"]), "expire_in": {"type": "string"},
            "expose_as": {"type": "string"}, "public": {"type": "boolean"}, "access": {"type": "string"},
            "reports": {"type": "object"}
        }, "additionalProperties": false},
        "cache": {"anyOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]},
        "parallel": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 200}, {"type": "object", "properties": {"matrix": {"type": "array"}}}]},
        "retry": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 2}, {"type": "object", "properties": {"max": {"type": "integer"}, "when": string_or_list(), "exit_codes": {}}}]},
        "timeout": {"type": "string"},
        "interruptible": {"type": "boolean"},
        "resource_group": {"type": "string"},
        "environment": {"anyOf": [{"type": "string"}, {"type": "object", "properties": {
            "name": {"type": "string"}, "url": {"type": "string"},
            "action": {"type": "string", "enum": ["start", "prepare", "stop", "verify", "access"]},
            "on_stop": {"type": "string"}, "auto_stop_in": {"type": "string"},
            "deployment_tier": {"type": "string", "enum": ["production", "staging", "testing", "development", "other"]},
            "kubernetes": {"type": "object"}
        }}]},
        "coverage": {"type": "string"},
        "trigger": {"anyOf": [{"type": "string"}, {"type": "object"}]},
        "extends": string_or_list(),
        "inherit": {"type": "object", "properties": {"default": {"anyOf": [{"type": "boolean"}, {"type": "array"}]}, "variables": {"anyOf": [{"type": "boolean"}, {"type": "array"}]}}},
        "release": {"type": "object"}, "secrets": {"type": "object"}, "id_tokens": {"type": "object"},
        "pages": {}, "manual_confirmation": {"type": "string"},
        "dast_configuration": {}, "hooks": {}, "identity": {}, "run": {}, "type": {"type": "string"}
    })
}

/// The schema document.
pub fn json_schema() -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Gantry / GitLab CI pipeline",
        "type": "object",
        "properties": {
            "stages": {"type": "array", "items": {"type": "string"}},
            "variables": variables(),
            "default": {"type": "object"},
            "workflow": {"type": "object", "properties": {"name": {"type": "string"}, "rules": rules(false), "auto_cancel": {"type": "object"}}},
            "include": {"anyOf": [{"type": "string"}, {"type": "object"}, {"type": "array"}]},
            "image": image(),
            "services": {"type": "array"},
            "cache": {},
            "before_script": script(),
            "after_script": script(),
            "spec": {"type": "object"}
        },
        "additionalProperties": {"type": "object", "properties": job_properties(), "additionalProperties": false}
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_job_keyword_is_described() {
        let props = super::job_properties();
        for k in super::super::build::JOB_KEYS {
            assert!(props.get(k).is_some(), "schema lacks job keyword {k}");
        }
    }
}
