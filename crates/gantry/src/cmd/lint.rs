//! `gantry lint`: every problem of a pipeline file, with its line; exit 0 when clean,
//! 1 on errors (warnings alone exit 0).

use super::{Format, Source};
use anyhow::Result;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline file (same as --file).
    pub path: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub source: Source,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(mut a: Args) -> Result<ExitCode> {
    if a.path.is_some() {
        a.source.file = a.path.take();
    }
    let loaded = a.source.load(&|_| None)?;
    let d = &loaded.diagnostics;
    match a.format {
        Format::Json => {
            let out = serde_json::json!({
                "valid": !d.has_errors(),
                "errors": d.error_count(),
                "warnings": d.warning_count(),
                "diagnostics": d.located(&loaded.sources),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Format::Text => {
            eprint!("{}", d.render(&loaded.sources));
            let jobs = loaded.pipeline.as_ref().map(|p| p.jobs.len()).unwrap_or(0);
            let root = loaded.sources.name(gantry_pipeline::source::FileId(0));
            if d.has_errors() {
                eprintln!(
                    "{root}: {} error(s), {} warning(s)",
                    d.error_count(),
                    d.warning_count()
                );
            } else {
                println!(
                    "{root}: valid, {jobs} job(s){}",
                    if d.warning_count() > 0 {
                        format!(", {} warning(s)", d.warning_count())
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    Ok(if d.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
