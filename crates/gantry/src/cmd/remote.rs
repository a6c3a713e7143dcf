//! `include: remote` over HTTP(S), with a timeout and a size limit.

use gantry_pipeline::resolve::FetchError;
use std::io::Read;
use std::time::Duration;

/// How long a remote include may take, connect to last byte, unless
/// `GANTRY_INCLUDE_TIMEOUT_SECS` says otherwise.
const TIMEOUT: Duration = Duration::from_secs(10);

pub fn fetch(url: &str, max_bytes: u64) -> Result<String, FetchError> {
    let timeout = std::env::var("GANTRY_INCLUDE_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(TIMEOUT);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let timed_out = || FetchError::Failed(format!("no answer within {}s", timeout.as_secs()));
    let resp = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Timeout(_) => timed_out(),
        e => FetchError::Failed(e.to_string()),
    })?;
    let status = resp.status().as_u16();
    if status == 404 {
        return Err(FetchError::NotFound);
    }
    if !(200..300).contains(&status) {
        return Err(FetchError::Failed(format!(
            "the server answered HTTP {status}"
        )));
    }
    let mut body = Vec::new();
    resp.into_body()
        .into_reader()
        .take(max_bytes + 1)
        .read_to_end(&mut body)
        .map_err(|e| FetchError::Failed(format!("reading the answer: {e}")))?;
    if body.len() as u64 > max_bytes {
        return Err(FetchError::Failed(format!(
            "the file is larger than {max_bytes} bytes"
        )));
    }
    String::from_utf8(body).map_err(|_| FetchError::Failed("the file is not UTF-8".into()))
}
