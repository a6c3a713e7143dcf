//! What people see of an image and what they change beside the Distribution API (the
//! server's web UI): a manifest read back from the blob store as its layers, config,
//! platforms and annotations, the kind of thing it is, the bytes it holds; and deleting a
//! tag with the checks `DELETE /v2/NAME/manifests/TAG` makes (the tag's immutability) and
//! the same `image_deleted` event. Who may do it is the caller's business, as for
//! promotion.

use crate::digest::Digest;
use crate::error::{Code, RegistryError, Result};
use crate::manifest::{DOCKER_LIST, FOREIGN_LAYERS, OCI_INDEX};
use crate::names::valid_tag;
use crate::{Authority, Registry};
use gantry_store::db::{ManifestRow, RepositoryRow};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;

/// An index's entries read further (their own manifests) at most: enough for every platform
/// a real image has, bounded for a hostile one.
const MAX_ENTRIES_READ: usize = 64;

/// What a manifest is, as a list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A container image (OCI or Docker schema 2).
    Image,
    /// An index or a Docker manifest list: an image per platform.
    Index,
    /// Something else stored as an OCI manifest: a signature, an SBOM, a Helm chart, …
    Artifact,
}

impl Kind {
    /// From a stored manifest's media type and artifact type (an image manifest without an
    /// `artifactType` has its config's media type there).
    pub fn of(media_type: &str, artifact_type: Option<&str>) -> Kind {
        const IMAGE_CONFIGS: [&str; 2] = [
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.docker.container.image.v1+json",
        ];
        if media_type == OCI_INDEX || media_type == DOCKER_LIST {
            Kind::Index
        } else if artifact_type.is_none_or(|t| IMAGE_CONFIGS.contains(&t)) {
            Kind::Image
        } else {
            Kind::Artifact
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Index => "index",
            Kind::Artifact => "artifact",
        }
    }
}

/// A descriptor of a manifest: a layer, the config, an index's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    /// An index entry's platform: `linux/amd64`, `linux/arm64/v8`.
    pub platform: Option<String>,
    /// An index entry's image: its config's and layers' bytes (`None` when the entry is not
    /// in the repository, or past the entries read).
    pub image_size: Option<i64>,
    /// A layer that lives elsewhere (Windows base layers): not stored here.
    pub foreign: bool,
}

/// A manifest as a page shows it.
#[derive(Debug, Clone)]
pub struct ManifestView {
    pub row: ManifestRow,
    pub kind: Kind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    /// An index's entries.
    pub manifests: Vec<Descriptor>,
    /// The manifest's annotations, by key.
    pub annotations: Vec<(String, String)>,
    /// The bytes the image holds in the registry: its config and layers (each blob once;
    /// for an index, those of the entries read), not the manifests themselves.
    pub size: i64,
}

fn descriptor(v: &Value) -> Option<Descriptor> {
    let media_type = v["mediaType"].as_str().unwrap_or_default().to_string();
    let platform = v.get("platform").filter(|p| p.is_object()).map(|p| {
        [&p["os"], &p["architecture"], &p["variant"]]
            .iter()
            .filter_map(|x| x.as_str())
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    });
    Some(Descriptor {
        foreign: FOREIGN_LAYERS.contains(&media_type.as_str()),
        media_type,
        digest: v["digest"].as_str()?.to_string(),
        size: v["size"].as_i64().unwrap_or(0),
        artifact_type: v["artifactType"].as_str().map(String::from),
        platform: platform.filter(|p| !p.is_empty()),
        image_size: None,
    })
}

/// The config and layers of an image manifest's JSON; its annotations.
struct Parts {
    config: Option<Descriptor>,
    layers: Vec<Descriptor>,
    manifests: Vec<Descriptor>,
    annotations: Vec<(String, String)>,
}

fn parts(bytes: &[u8]) -> Parts {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let list = |k: &str| -> Vec<Descriptor> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(descriptor).collect())
            .unwrap_or_default()
    };
    let mut annotations: Vec<(String, String)> = v["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, x)| {
                    (
                        k.clone(),
                        x.as_str().map_or_else(|| x.to_string(), String::from),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    annotations.sort();
    Parts {
        config: descriptor(&v["config"]),
        layers: list("layers"),
        manifests: list("manifests"),
        annotations,
    }
}

/// The blobs an image's bytes are counted over: its config and stored layers.
fn stored_blobs(p: &Parts) -> impl Iterator<Item = &Descriptor> {
    p.config
        .iter()
        .chain(p.layers.iter().filter(|l| !l.foreign))
}

impl<A: Authority> Registry<A> {
    /// A manifest's bytes, as stored.
    async fn manifest_bytes(&self, digest: &str) -> Result<Vec<u8>> {
        let d = Digest::parse(digest).ok_or_else(|| {
            RegistryError::new(Code::DigestInvalid, format!("'{digest}' is not a digest"))
        })?;
        let (blobs, key) = (self.inner.blobs.clone(), d.blob_key());
        let digest = digest.to_string();
        tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let missing = || {
                RegistryError::new(
                    Code::ManifestUnknown,
                    format!("the bytes of manifest {digest} are not in the blob store"),
                )
            };
            let mut r = blobs.open(&key).map_err(|_| missing())?;
            let mut v = Vec::new();
            r.read_to_end(&mut v).map_err(|_| missing())?;
            Ok(v)
        })
        .await
        .map_err(|e| RegistryError::new(Code::Unavailable, format!("reading a manifest: {e}")))?
    }

    /// Manifest `digest` of `repo`, read (`None`: the repository does not hold it). An
    /// index's entries are read too, for their images' sizes.
    pub async fn manifest_view(
        &self,
        repo: &RepositoryRow,
        digest: &str,
    ) -> Result<Option<ManifestView>> {
        let Some(row) = self.inner.db.manifest(repo.id, digest).await? else {
            return Ok(None);
        };
        let kind = Kind::of(&row.media_type, row.artifact_type.as_deref());
        let mut p = parts(&self.manifest_bytes(&row.digest).await?);
        let mut counted: HashMap<String, i64> = stored_blobs(&p)
            .map(|d| (d.digest.clone(), d.size))
            .collect();
        if kind == Kind::Index {
            counted.clear();
            for entry in p.manifests.iter_mut().take(MAX_ENTRIES_READ) {
                if self
                    .inner
                    .db
                    .manifest(repo.id, &entry.digest)
                    .await?
                    .is_none()
                {
                    continue;
                }
                let child = parts(&self.manifest_bytes(&entry.digest).await?);
                let mut own: HashMap<&str, i64> = HashMap::new();
                for d in stored_blobs(&child) {
                    own.insert(&d.digest, d.size);
                    counted.insert(d.digest.clone(), d.size);
                }
                entry.image_size = Some(own.values().sum());
            }
        }
        Ok(Some(ManifestView {
            kind,
            config: p.config,
            layers: p.layers,
            manifests: p.manifests,
            annotations: p.annotations,
            size: counted.values().sum(),
            row,
        }))
    }

    /// Whether a tag of the project is immutable (its registry policy).
    pub async fn tag_is_immutable(&self, project_id: i64, tag: &str) -> Result<bool> {
        Ok(self.rules_of(project_id).await?.immutable(tag))
    }

    /// Deletes tag `tag` of repository `name` as `DELETE /v2/NAME/manifests/TAG` does: an
    /// immutable tag is refused, the manifest stays (by digest), the `image_deleted` event
    /// goes out with `actor`. The digest the tag named.
    pub async fn delete_tag(&self, name: &str, tag: &str, actor: &str) -> Result<String> {
        if !valid_tag(tag) {
            return Err(RegistryError::new(
                Code::TagInvalid,
                format!("'{tag}' is not a valid tag"),
            ));
        }
        let db = &self.inner.db;
        let repo = self.repository(name).await?.ok_or_else(|| {
            RegistryError::new(
                Code::NameUnknown,
                format!("repository {name} is not known to this registry"),
            )
        })?;
        let unknown = || {
            RegistryError::new(
                Code::ManifestUnknown,
                format!("{name}:{tag} is not a tag of {name}"),
            )
        };
        let t = db.tag(repo.id, tag).await?.ok_or_else(unknown)?;
        self.check_tag_change(&repo, tag, None).await?;
        if !db.delete_tag(repo.id, tag).await? {
            return Err(unknown());
        }
        self.emit(crate::Event {
            kind: "image_deleted",
            project_id: repo.project_id,
            repository: name.to_string(),
            tag: Some(tag.to_string()),
            digest: t.digest.clone(),
            actor: actor.to_string(),
        });
        Ok(t.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            Kind::of(
                crate::manifest::OCI_MANIFEST,
                Some("application/vnd.oci.image.config.v1+json")
            ),
            Kind::Image
        );
        assert_eq!(
            Kind::of(crate::manifest::DOCKER_MANIFEST, None),
            Kind::Image
        );
        assert_eq!(Kind::of(OCI_INDEX, None), Kind::Index);
        assert_eq!(Kind::of(DOCKER_LIST, None), Kind::Index);
        assert_eq!(
            Kind::of(
                crate::manifest::OCI_MANIFEST,
                Some("application/vnd.dev.cosign.artifact.sig.v1+json")
            ),
            Kind::Artifact
        );
    }

    #[test]
    fn parts_of_an_image_and_an_index() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":10}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":100}},
                      {{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":100}},
                      {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":5000}}],
            "annotations":{{"org.opencontainers.image.source":"https://example.com/app","b":1}}}}"#,
            d('c'),
            d('a'),
            d('a'),
            d('f')
        );
        let p = parts(image.as_bytes());
        assert_eq!(p.config.as_ref().unwrap().size, 10);
        assert_eq!(p.layers.len(), 3);
        assert!(p.layers[2].foreign);
        let counted: HashMap<&str, i64> = stored_blobs(&p)
            .map(|d| (d.digest.as_str(), d.size))
            .collect();
        assert_eq!(
            counted.values().sum::<i64>(),
            110,
            "a repeated layer once, foreign none"
        );
        assert_eq!(
            p.annotations,
            vec![
                ("b".to_string(), "1".to_string()),
                (
                    "org.opencontainers.image.source".to_string(),
                    "https://example.com/app".to_string()
                )
            ]
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":500,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            crate::manifest::OCI_MANIFEST,
            d('1')
        );
        let p = parts(index.as_bytes());
        assert_eq!(p.manifests[0].platform.as_deref(), Some("linux/arm64/v8"));
        assert!(p.config.is_none() && p.layers.is_empty());
        assert!(parts(b"not json").manifests.is_empty());
    }
}
