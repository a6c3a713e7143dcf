//! Promotion by digest inside the registry: `dev/app:1.4` → `test/app:1.4-test` makes the
//! destination repository hold the very manifest (same digest) and links to the same blobs,
//! in one database transaction; no layer byte moves. Who may promote is the caller's
//! business (the server checks the destination project's promote role); what it did is
//! returned for the audit log.

use crate::digest::Digest;
use crate::error::{Code, RegistryError, Result};
use crate::names::{valid_name, valid_tag};
use crate::{Authority, Registry};

/// An image in this registry: a repository and a tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Reads `name:tag`, `name@digest` or `name` (no tag: the caller decides).
    pub fn parse(s: &str) -> std::result::Result<ImageRef, String> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).ok_or_else(|| format!("'{d}' in '{s}' is not a digest"))?),
            ),
            None => (s, None),
        };
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
            _ => (rest, None),
        };
        if !valid_name(name) {
            return Err(format!(
                "'{name}' is not a repository name: PROJECT/NAME in lowercase letters, digits, '.', '_', '-'"
            ));
        }
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(format!("'{t}' is not a valid tag"));
        }
        Ok(ImageRef {
            name: name.to_string(),
            tag,
            digest,
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// What a promotion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    pub digest: String,
    pub source: String,
    pub destination: String,
    /// Manifests the destination got (the image, an index's images, their referrers).
    pub manifests: usize,
}

impl<A: Authority> Registry<A> {
    /// Promotes `source` to `destination` (which needs a tag, or takes the source's).
    pub async fn promote(
        &self,
        source: &ImageRef,
        destination: &ImageRef,
        by: &str,
    ) -> Result<Promoted> {
        let db = &self.inner.db;
        let src = self.repository(&source.name).await?.ok_or_else(|| {
            RegistryError::new(
                Code::NameUnknown,
                format!("repository {} is not known to this registry", source.name),
            )
        })?;
        let manifest = match (&source.digest, &source.tag) {
            (Some(d), _) => db.manifest(src.id, &d.to_string()).await?,
            (None, Some(t)) => db.tagged_manifest(src.id, t).await?,
            (None, None) => db.tagged_manifest(src.id, "latest").await?,
        }
        .ok_or_else(|| {
            RegistryError::new(
                Code::ManifestUnknown,
                format!("{source} is not in the registry"),
            )
        })?;
        if let (Some(d), Some(t)) = (&source.digest, &source.tag)
            && db
                .tagged_manifest(src.id, t)
                .await?
                .is_none_or(|m| m.digest != d.to_string())
        {
            return Err(RegistryError::new(
                Code::ManifestUnknown,
                format!(
                    "{}:{t} is not {d} (the tag moved): promote by digest",
                    source.name
                ),
            ));
        }
        let tag = destination
            .tag
            .clone()
            .or_else(|| source.tag.clone())
            .ok_or_else(|| {
                RegistryError::new(
                    Code::TagInvalid,
                    format!("name the destination's tag: {}:TAG", destination.name),
                )
            })?;
        if destination.digest.is_some() {
            return Err(RegistryError::new(
                Code::TagInvalid,
                "the destination is a tag (PROJECT/NAME:TAG): its digest is the source's",
            ));
        }
        let dst = self.repo_for_write(&destination.name).await?;
        self.check_tag_change(&dst, &tag, Some(&manifest.digest))
            .await?;
        let manifests = db
            .promote_manifest(src.id, &manifest.digest, dst.id, &tag, by)
            .await
            .map_err(|e| match e {
                gantry_store::StoreError::NotFound(_) => RegistryError::new(
                    Code::ManifestUnknown,
                    format!("{source} was deleted while it was being promoted"),
                ),
                e => e.into(),
            })?;
        Ok(Promoted {
            digest: manifest.digest,
            source: source.to_string(),
            destination: format!("{}:{tag}", destination.name),
            manifests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = ImageRef::parse("dev/app:1.4").unwrap();
        assert_eq!(
            (r.name.as_str(), r.tag.as_deref()),
            ("dev/app", Some("1.4"))
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = ImageRef::parse(&format!("dev/app@{d}")).unwrap();
        assert_eq!(r.digest.unwrap().to_string(), d);
        assert!(ImageRef::parse("dev/App:1").is_err());
        assert!(ImageRef::parse("dev/app:-x").is_err());
        assert!(ImageRef::parse("dev/app@sha256:zz").is_err());
        assert_eq!(ImageRef::parse("dev/app").unwrap().tag, None);
    }
}
