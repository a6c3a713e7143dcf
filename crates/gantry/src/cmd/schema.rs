//! `gantry schema`: a JSON Schema of the pipeline file, for editors (YAML language servers).

use anyhow::Result;
use std::process::ExitCode;

pub fn run() -> Result<ExitCode> {
    println!(
        "{}",
        serde_json::to_string_pretty(&gantry_pipeline::model::schema::json_schema())?
    );
    Ok(ExitCode::SUCCESS)
}
