//! Manifests as the registry reads them: which kind, what they point at, their subject.
//! The bytes are stored as they came (their digest is of those bytes); this only checks
//! them and pulls out what the registry needs to know.

use crate::digest::Digest;
use crate::error::{Code, RegistryError, Result};
use serde::Deserialize;
use serde_json::Value;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Layers that live elsewhere (Windows base layers): not required in the repository.
pub(crate) const FOREIGN_LAYERS: [&str; 4] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// The largest manifest accepted (the spec asks for at least 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// What the registry learns from a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub media_type: String,
    /// `artifactType`, or for an image manifest without one its config's media type.
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub annotations: Option<String>,
    /// Blobs that must be in the repository (config and layers).
    pub blobs: Vec<Digest>,
    /// Manifests that must be in the repository (an index's entries).
    pub manifests: Vec<Digest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::new(Code::ManifestInvalid, msg)
}

fn descriptor(d: &Descriptor, what: &str) -> Result<Digest> {
    if d.size < 0 {
        return Err(invalid(format!("{what}: size {} is negative", d.size)));
    }
    Digest::parse(&d.digest).ok_or_else(|| {
        invalid(format!(
            "{what}: '{}' is not a sha256 or sha512 digest",
            d.digest
        ))
    })
}

/// Reads a manifest sent with `content_type` (the request's `Content-Type`, if any).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed> {
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("the manifest is not valid JSON of a manifest: {e}")))?;
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/octet-stream" && *c != "application/json");
    if let Some(t) = header.or(raw.media_type.as_deref())
        && DOCKER_SCHEMA1.contains(&t)
    {
        return Err(invalid(
            "Docker image manifest schema 1 is not supported: push with a current client (schema 2 or OCI)",
        ));
    }
    if raw.schema_version != Some(2) {
        return Err(invalid(format!(
            "schemaVersion must be 2, not {}",
            raw.schema_version
                .map_or_else(|| "missing".into(), |v| v.to_string())
        )));
    }
    if let (Some(h), Some(b)) = (header, raw.media_type.as_deref())
        && h != b
    {
        return Err(invalid(format!(
            "the Content-Type '{h}' differs from the manifest's mediaType '{b}'"
        )));
    }
    let media_type = match header.or(raw.media_type.as_deref()) {
        Some(t) => t.to_string(),
        None if raw.manifests.is_some() => OCI_INDEX.into(),
        None if raw.config.is_some() => OCI_MANIFEST.into(),
        None => {
            return Err(invalid(
                "the manifest has no mediaType, config or manifests",
            ));
        }
    };
    let subject = raw
        .subject
        .as_ref()
        .map(|s| descriptor(s, "subject"))
        .transpose()?;
    let annotations = match raw.annotations {
        Some(Value::Object(m)) if !m.is_empty() => Some(Value::Object(m).to_string()),
        Some(Value::Object(_)) | None => None,
        Some(_) => return Err(invalid("annotations must be an object")),
    };
    let mut parsed = Parsed {
        media_type: media_type.clone(),
        artifact_type: raw.artifact_type.clone(),
        subject,
        annotations,
        blobs: Vec::new(),
        manifests: Vec::new(),
    };
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = raw
                .config
                .as_ref()
                .ok_or_else(|| invalid("an image manifest needs a config"))?;
            if raw.manifests.is_some() {
                return Err(invalid("an image manifest has no 'manifests'"));
            }
            parsed.blobs.push(descriptor(config, "config")?);
            if parsed.artifact_type.is_none() && media_type == OCI_MANIFEST {
                parsed.artifact_type = config.media_type.clone();
            }
            for (i, l) in raw.layers.iter().flatten().enumerate() {
                let d = descriptor(l, &format!("layers[{i}]"))?;
                if !l
                    .media_type
                    .as_deref()
                    .is_some_and(|t| FOREIGN_LAYERS.contains(&t))
                {
                    parsed.blobs.push(d);
                }
            }
        }
        OCI_INDEX | DOCKER_LIST => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(invalid("an index has no config or layers"));
            }
            for (i, m) in raw.manifests.iter().flatten().enumerate() {
                parsed
                    .manifests
                    .push(descriptor(m, &format!("manifests[{i}]"))?);
            }
        }
        other => {
            return Err(invalid(format!(
                "unsupported manifest media type '{other}': use {OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST} or {DOCKER_LIST}"
            )));
        }
    }
    parsed.blobs.sort_by_key(Digest::to_string);
    parsed.blobs.dedup();
    parsed.manifests.dedup();
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    fn d(s: &str) -> String {
        Digest::of(Algorithm::Sha256, s.as_bytes()).to_string()
    }

    #[test]
    fn reads_image_manifests_indexes_and_artifacts() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}},"annotations":{{"a":"b"}}}}"#,
            d("c"),
            d("l"),
            d("s")
        );
        let p = parse(m.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(p.media_type, OCI_MANIFEST);
        assert_eq!(p.blobs.len(), 2);
        assert_eq!(p.subject.unwrap().to_string(), d("s"));
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(p.annotations.as_deref(), Some(r#"{"a":"b"}"#));

        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5}}]}}"#,
            d("m")
        );
        let p = parse(i.as_bytes(), None).unwrap();
        assert_eq!(p.media_type, OCI_INDEX);
        assert_eq!(p.manifests.len(), 1);
    }

    #[test]
    fn refuses_what_is_not_a_manifest_with_a_reason() {
        let cases: [(&str, Option<&str>, &str); 6] = [
            ("not json", None, "not valid JSON"),
            (r#"{"schemaVersion":1}"#, None, "schemaVersion must be 2"),
            (
                r#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#,
                None,
                "schema 1 is not supported",
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:xyz","size":1}}"#,
                None,
                "config: 'sha256:xyz' is not a sha256",
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                Some(OCI_MANIFEST),
                "differs from the manifest's mediaType",
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"text/plain"}"#,
                None,
                "unsupported manifest media type",
            ),
        ];
        for (body, ct, want) in cases {
            let e = parse(body.as_bytes(), ct).unwrap_err();
            assert_eq!(e.code, Code::ManifestInvalid);
            assert!(e.message.contains(want), "{body}: {}", e.message);
        }
    }
}
