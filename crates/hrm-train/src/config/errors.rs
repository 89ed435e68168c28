//! Configuration errors: [`ConfigError`] (one line naming the key and where its value came
//! from) and [`Origin`] (a file or a command-line override), with the per-key provenance kept
//! for them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A config file (the preset or one of its `base` files).
    File(PathBuf),
    /// A command-line `key=value` override (the whole argument).
    Override(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Override(arg) => write!(f, "override `{arg}`"),
        }
    }
}

/// A configuration problem. Every variant displays as one line that names the key and the file
/// or override it came from, with a hint.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("{path}:{line}:{column}: invalid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message (one line).
        message: String,
    },
    /// A key the configuration does not have.
    #[error("{origin}: unknown key `{key}`{}", suggestion_text(.suggestion))]
    UnknownKey {
        /// File or override holding it.
        origin: Origin,
        /// Dotted key, e.g. `arch.hiden_size`.
        key: String,
        /// The closest known key, if one is close.
        suggestion: Option<String>,
    },
    /// A value of the wrong type.
    #[error("{origin}: `{key}` expects {expected}, got {got}")]
    WrongType {
        /// File or override holding it.
        origin: Origin,
        /// Dotted key.
        key: String,
        /// What the key takes, e.g. "an integer".
        expected: String,
        /// The value found, as written in TOML.
        got: String,
    },
    /// A required key is set nowhere.
    #[error(
        "{origin}: missing required key `{key}` (start the file with `base = \"pretrain.toml\"` \
         to inherit the reference defaults)"
    )]
    MissingKey {
        /// The top config file.
        origin: Origin,
        /// Dotted key.
        key: String,
    },
    /// A command-line override that is not `key=value`.
    #[error("override `{arg}` is not of the form key=value (e.g. `lr=7e-5` or `arch.L_cycles=8`)")]
    OverrideSyntax {
        /// The argument as given.
        arg: String,
    },
    /// A value of the right type that cannot work.
    #[error("{origin}: `{key}` {problem}")]
    Invalid {
        /// File or override holding it.
        origin: Origin,
        /// Dotted key.
        key: String,
        /// What is wrong, with a hint.
        problem: String,
    },
    /// The dataset facts give a model that cannot work.
    #[error("{data_path}: dataset.json `{key}` {problem}")]
    Dataset {
        /// The dataset folder.
        data_path: String,
        /// The dataset.json field.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A resumed run's configuration differs from the saved one in keys that must match.
    #[error(
        "config does not match the run being resumed: {} (these keys must equal the saved \
         config.toml; drop the overrides or start a new run)",
        .diffs.join("; ")
    )]
    ResumeMismatch {
        /// One `` `key` (saved X, now Y) `` entry per differing key.
        diffs: Vec<String>,
    },
}

fn suggestion_text(s: &Option<String>) -> String {
    match s {
        Some(k) => format!(" (did you mean `{k}`?)"),
        None => " (see configs/pretrain.toml for every key)".into(),
    }
}

/// Provenance of every key (where its value came from), kept for error messages after loading.
/// It is not part of the configuration's value: two configs compare equal whatever their origin.
/// The second field lists the files in merge order (a base before the file that names it, so the
/// file given on the command line comes last).
#[derive(Debug, Clone, Default)]
pub(super) struct Provenance(pub(super) BTreeMap<String, Origin>, pub(super) Vec<PathBuf>);

impl Provenance {
    /// How close `origin` is to what the user wrote last: an override above every file, and a
    /// file above its bases.
    pub(super) fn rank(&self, origin: &Origin) -> usize {
        match origin {
            Origin::Override(_) => usize::MAX,
            Origin::File(p) => self.1.iter().position(|f| f == p).unwrap_or(0),
        }
    }
}

impl PartialEq for Provenance {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Squash a multi-line message (toml's errors carry a source excerpt) into one line.
pub(super) fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
