//! The YAML loader: any text either loads or yields a diagnostic, within the budgets of
//! `Limits::default()`; and whatever loads, `Node::to_yaml` renders as YAML that loads again.
#![no_main]

use gantry_pipeline::diag::Diagnostics;
use gantry_pipeline::source::SourceMap;
use gantry_pipeline::yaml::{Limits, load_with_limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut sources = SourceMap::new();
    let file = sources.add("f.yml", text);
    let mut diags = Diagnostics::new();
    let Some(docs) = load_with_limits(&sources, file, &mut diags, Limits::default()) else {
        // A rejected file must say why.
        assert!(diags.has_errors(), "load returned None without an error");
        let _ = diags.render(&sources);
        return;
    };
    let _ = diags.render(&sources);
    for doc in &docs {
        let _ = doc.kind();
        let _ = doc.size();
        // Round trip: the rendering must load again without panicking (only panics, hangs and
        // exhausted memory count as findings here, not a different result).
        let yaml = doc.to_yaml();
        let mut sources2 = SourceMap::new();
        let file2 = sources2.add("roundtrip.yml", yaml);
        let mut diags2 = Diagnostics::new();
        if let Some(docs2) = load_with_limits(&sources2, file2, &mut diags2, Limits::default()) {
            for d in &docs2 {
                let _ = d.to_yaml();
            }
        }
        let _ = diags2.render(&sources2);
    }
});
