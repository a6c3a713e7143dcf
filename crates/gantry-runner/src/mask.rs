//! Masking secrets in job output, byte for byte.
//!
//! Every masked value is also searched in its base64 and URL-encoded forms, and in each line
//! of a multi-line value. Output arrives in chunks that may split a secret anywhere, so the
//! masker holds back the last `longest - 1` bytes of each chunk until the next one (or
//! [`Masker::finish`]) shows whether they start a secret.

use base64::Engine as _;

/// What a masked value is replaced with.
pub const MASK: &[u8] = b"[MASKED]";

/// The smallest value worth masking (GitLab requires 8 characters; we mask shorter values too,
/// but never 1–2 byte ones, which would shred the log).
const MIN_LEN: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct Masker {
    needles: Vec<Vec<u8>>,
    longest: usize,
    pending: Vec<u8>,
}

impl Masker {
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Masker {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for s in secrets {
            let s = s.as_ref();
            let mut forms = vec![s.to_string()];
            forms.push(base64::engine::general_purpose::STANDARD.encode(s));
            forms.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s));
            forms.push(url_encode(s));
            if s.contains('\n') {
                forms.extend(s.lines().map(|l| l.trim_end_matches('\r').to_string()));
            }
            for f in forms {
                let f = f.into_bytes();
                if f.len() >= MIN_LEN && !needles.contains(&f) {
                    needles.push(f);
                }
            }
        }
        // Longest first, so a value that contains another is masked whole.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let longest = needles.first().map_or(0, Vec::len);
        Masker {
            needles,
            longest,
            pending: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Masks a chunk; returns the bytes that are safe to emit now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.needles.is_empty() {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        let (out, keep_from) = self.scan(false);
        self.pending.drain(..keep_from);
        out
    }

    /// Flushes what is held back at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let (out, _) = self.scan(true);
        self.pending.clear();
        out
    }

    /// Replaces every secret in `pending`. Unless `last`, bytes that might begin a secret
    /// completed by the next chunk are not emitted; returns the output and where the kept
    /// tail starts.
    fn scan(&self, last: bool) -> (Vec<u8>, usize) {
        let buf = &self.pending;
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        let safe_end = if last {
            buf.len()
        } else {
            buf.len().saturating_sub(self.longest.saturating_sub(1))
        };
        while i < buf.len() {
            if let Some(n) = self.needles.iter().find(|n| buf[i..].starts_with(n)) {
                out.extend_from_slice(MASK);
                i += n.len();
                continue;
            }
            if i >= safe_end {
                // A prefix of a secret may start here: wait for more bytes.
                let rest = &buf[i..];
                if self
                    .needles
                    .iter()
                    .any(|n| n.len() > rest.len() && n.starts_with(rest))
                {
                    return (out, i);
                }
            }
            out.push(buf[i]);
            i += 1;
        }
        (out, buf.len())
    }
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(m: &mut Masker, chunks: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c));
        }
        out.extend(m.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_whole_and_split_values() {
        let mut m = Masker::new(["s3cr3t-value"]);
        assert_eq!(
            run(&mut m, &[b"token=s3cr3t-value done\n"]),
            "token=[MASKED] done\n"
        );
        let mut m = Masker::new(["s3cr3t-value"]);
        assert_eq!(
            run(&mut m, &[b"token=s3c", b"r3t-va", b"lue done\n"]),
            "token=[MASKED] done\n"
        );
        let mut m = Masker::new(["s3cr3t-value"]);
        let bytes = b"a s3cr3t-value b s3cr3t-value c";
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&mut m, &chunks), "a [MASKED] b [MASKED] c");
    }

    #[test]
    fn masks_encoded_forms_and_lines() {
        let secret = "p@ss word/+1";
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let mut m = Masker::new([secret]);
        let text = format!("{b64} {} {secret}", url_encode(secret));
        assert_eq!(
            run(&mut m, &[text.as_bytes()]),
            "[MASKED] [MASKED] [MASKED]"
        );
        let mut m = Masker::new(["line-one\nline-two"]);
        assert_eq!(
            run(&mut m, &[b"x line-two y\nline-one\n"]),
            "x [MASKED] y\n[MASKED]\n"
        );
    }

    #[test]
    fn passes_other_bytes_unchanged() {
        let mut m = Masker::new(["secret"]);
        assert_eq!(
            run(&mut m, &[b"secre", b"tive", b" sec"]),
            "secretive sec".replace("secret", "[MASKED]")
        );
        let mut m = Masker::new(Vec::<String>::new());
        assert_eq!(run(&mut m, &[b"anything"]), "anything");
    }
}
