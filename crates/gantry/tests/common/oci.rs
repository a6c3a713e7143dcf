//! A bare Distribution API client for tests: every request by hand, so that tests see each
//! status code and header the registry sends (what real clients hide).

#![allow(dead_code)]

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use std::collections::HashMap;

/// A response: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The first error code of an `{"errors": […]}` body.
    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Clone)]
pub struct Oci {
    pub url: String,
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

pub fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
}

impl Oci {
    pub fn new(url: &str) -> Oci {
        Oci {
            url: url.to_string(),
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into()
    }

    /// Any request. `token`: a registry token (Bearer); `basic`: user and password.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.url)
        };
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(body.to_vec()).unwrap();
        let resp = Self::agent()
            .run(req)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let mut body = Vec::new();
        use std::io::Read;
        resp.into_body()
            .into_reader()
            .read_to_end(&mut body)
            .unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Asks the token endpoint, as Docker does, for `scopes` with Basic credentials.
    pub fn token_resp(&self, creds: Option<(&str, &str)>, scopes: &[&str]) -> Resp {
        let mut q = String::from("/v2/token?service=gantry-registry");
        for s in scopes {
            q.push_str("&scope=");
            q.extend(form_urlencoded_byte(s));
        }
        let basic = creds.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let headers: Vec<(&str, &str)> = basic
            .as_deref()
            .map(|b| vec![("Authorization", b)])
            .unwrap_or_default();
        self.call("GET", &q, None, &headers, b"")
    }

    /// A token for `scopes`; panics when the endpoint refuses.
    pub fn token(&self, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let r = self.token_resp(creds, scopes);
        assert_eq!(r.status, 200, "token: {}", r.text());
        r.json()["token"].as_str().unwrap().to_string()
    }

    /// The `access` claim of a token (its payload, unverified: the test only reads it).
    pub fn access(token: &str) -> Value {
        let payload = token.split('.').nth(1).unwrap();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        serde_json::from_slice::<Value>(&raw).unwrap()["access"].clone()
    }

    /// Pushes a blob in one request (`POST ?digest=`); the response.
    pub fn push_blob(&self, token: &str, name: &str, bytes: &[u8]) -> Resp {
        let d = sha256(bytes);
        self.call(
            "POST",
            &format!("/v2/{name}/blobs/uploads/?digest={d}"),
            Some(token),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        )
    }

    /// Pushes an image: a config and layers, then an OCI manifest under `tag`. The
    /// manifest's digest.
    pub fn push_image(&self, token: &str, name: &str, tag: &str, layers: &[&[u8]]) -> String {
        let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
            .to_string();
        let r = self.push_blob(token, name, config.as_bytes());
        assert_eq!(r.status, 201, "config: {}", r.text());
        let mut descs = Vec::new();
        for l in layers {
            let r = self.push_blob(token, name, l);
            assert_eq!(r.status, 201, "layer: {}", r.text());
            descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(l), "size": l.len()}));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config.as_bytes()), "size": config.len()},
            "layers": descs,
        })
        .to_string();
        let r = self.put_manifest(token, name, tag, manifest.as_bytes());
        assert_eq!(r.status, 201, "manifest: {}", r.text());
        sha256(manifest.as_bytes())
    }

    /// Pushes an OCI index under `tag` over manifests of `name` already pushed, each with
    /// its platform (`("linux", "amd64")`). The index's digest.
    pub fn push_index(
        &self,
        token: &str,
        name: &str,
        tag: &str,
        entries: &[(&str, (&str, &str))],
    ) -> String {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(digest, (os, arch))| {
                let r = self.call(
                    "HEAD",
                    &format!("/v2/{name}/manifests/{digest}"),
                    Some(token),
                    &[],
                    b"",
                );
                assert_eq!(r.status, 200, "{digest} is in {name}");
                let size: u64 = r.header("content-length").parse().unwrap();
                json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": digest, "size": size,
                       "platform": {"os": os, "architecture": arch}})
            })
            .collect();
        let index = json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})
        .to_string();
        let r = self.call(
            "PUT",
            &format!("/v2/{name}/manifests/{tag}"),
            Some(token),
            &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
            index.as_bytes(),
        );
        assert_eq!(r.status, 201, "index: {}", r.text());
        sha256(index.as_bytes())
    }

    /// Pushes an artifact (a signature, an SBOM) of `artifact_type` that refers to manifest
    /// `subject` of `name` (by digest, no tag). Its digest.
    pub fn push_referrer(
        &self,
        token: &str,
        name: &str,
        subject: &str,
        artifact_type: &str,
        payload: &[u8],
    ) -> String {
        let r = self.call(
            "HEAD",
            &format!("/v2/{name}/manifests/{subject}"),
            Some(token),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{subject} is in {name}");
        let subject_size: u64 = r.header("content-length").parse().unwrap();
        let empty = b"{}";
        for blob in [&empty[..], payload] {
            let r = self.push_blob(token, name, blob);
            assert_eq!(r.status, 201, "blob: {}", r.text());
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": sha256(payload), "size": payload.len()}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": subject_size},
        })
        .to_string();
        let digest = sha256(manifest.as_bytes());
        let r = self.put_manifest(token, name, &digest, manifest.as_bytes());
        assert_eq!(r.status, 201, "referrer: {}", r.text());
        digest
    }

    pub fn put_manifest(&self, token: &str, name: &str, reference: &str, bytes: &[u8]) -> Resp {
        self.call(
            "PUT",
            &format!("/v2/{name}/manifests/{reference}"),
            Some(token),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            bytes,
        )
    }
}

fn form_urlencoded_byte(s: &str) -> impl Iterator<Item = char> + '_ {
    s.bytes().flat_map(|b| {
        let keep = b.is_ascii_alphanumeric() || b"-_.~".contains(&b);
        let v: Vec<char> = if keep {
            vec![b as char]
        } else {
            format!("%{b:02X}").chars().collect()
        };
        v.into_iter()
    })
}
