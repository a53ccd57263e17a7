//! `qgpt tokenize`.

use std::path::PathBuf;

use super::{print_flush, CliError};
use qgpt::model::LoadedModel;

/// Arguments of `qgpt tokenize`.
#[derive(clap::Args)]
pub struct Args {
    /// GGUF model file.
    #[arg(short, long)]
    model: PathBuf,
    /// Read the text from this file instead of the command line.
    #[arg(long, conflicts_with = "text")]
    file: Option<PathBuf>,
    /// Text to tokenize.
    #[arg(required_unless_present = "file")]
    text: Option<String>,
}

/// Prints the ids as a JSON array on one line.
pub fn run(args: Args) -> Result<(), CliError> {
    let text = match (&args.file, args.text) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        (None, Some(t)) => t,
        (None, None) => unreachable!("clap requires one of them"),
    };
    let m = LoadedModel::open(&args.model)?;
    let ids = m.tokenizer.encode(&text)?;
    print_flush(&format!("{}\n", serde_json::to_string(&ids)?))
}
