//! Typed errors of the data crate.
//!
//! Every error names the file it is about and, where it applies, the field, line or item
//! (task id, pair) that is wrong, plus a hint when the fix is not obvious. The reference
//! builders (sapientinc/HRM:dataset/build_*_dataset.py) use bare `assert`s; here bad user
//! input never panics, it comes back as one of these variants.

use std::path::{Path, PathBuf};

/// Every failure the data crate can report.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system error while reading or writing `path`.
    #[error("{}: {err}", path.display())]
    Io {
        /// The file or folder being accessed.
        path: PathBuf,
        /// The underlying error.
        err: std::io::Error,
    },

    /// A required file or folder does not exist.
    #[error("{}: not found ({hint})", path.display())]
    NotFound {
        /// The missing file or folder.
        path: PathBuf,
        /// What the user should do about it.
        hint: String,
    },

    /// A `.npy` file that is not a valid (or not a supported) NumPy array file.
    #[error("{}: invalid .npy file: {msg}", path.display())]
    Npy {
        /// The `.npy` file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },

    /// A JSON file that does not parse (syntax, missing key, wrong type).
    #[error("{}: invalid JSON: {err}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser's message (it carries line and column).
        err: serde_json::Error,
    },

    /// A structurally valid file whose content breaks an invariant of the dataset format
    /// (shape mismatch, non-monotonic index, token out of the vocabulary, ...).
    #[error("{}: field `{field}`: {msg}", path.display())]
    Field {
        /// The file holding the field.
        path: PathBuf,
        /// The field (JSON key or array name).
        field: String,
        /// What is wrong with it.
        msg: String,
    },

    /// A bad line of a text input (CSV row, puzzle list line); `line` is 1-based.
    #[error("{}: line {line}: {msg}", path.display())]
    Line {
        /// The text file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        msg: String,
    },

    /// A bad item of a structured input, located by a free-form `location`
    /// (e.g. "task 007bbfc7, train pair 2, row 3, col 5").
    #[error("{}: {location}: {msg}", path.display())]
    Item {
        /// The file holding the item.
        path: PathBuf,
        /// Where in the file.
        location: String,
        /// What is wrong with it.
        msg: String,
    },

    /// The output folder exists already and replacing it was not allowed.
    #[error("{}: output folder already exists (pass --force to replace it)", path.display())]
    OutputExists {
        /// The existing output folder.
        path: PathBuf,
    },

    /// An option value that makes no sense (e.g. a zero batch size).
    #[error("invalid option `{option}`: {msg}")]
    Option {
        /// The option name as the user spells it (e.g. `--num-aug`).
        option: String,
        /// Why the value is rejected.
        msg: String,
    },
}

/// Result alias of the data crate.
pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// An I/O error on `path` (use [`open_file`] / [`require_dir`] to turn a missing file into
    /// [`DataError::NotFound`] with a hint).
    pub fn io(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        DataError::Io {
            path: path.as_ref().to_path_buf(),
            err,
        }
    }

    /// A `.npy` format error on `path`.
    pub fn npy(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        DataError::Npy {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// A field-level validation error on `path`.
    pub fn field(path: impl AsRef<Path>, field: impl Into<String>, msg: impl Into<String>) -> Self {
        DataError::Field {
            path: path.as_ref().to_path_buf(),
            field: field.into(),
            msg: msg.into(),
        }
    }

    /// A line-level error on `path` (1-based `line`).
    pub fn line(path: impl AsRef<Path>, line: usize, msg: impl Into<String>) -> Self {
        DataError::Line {
            path: path.as_ref().to_path_buf(),
            line,
            msg: msg.into(),
        }
    }

    /// An item-level error on `path` at `location`.
    pub fn item(
        path: impl AsRef<Path>,
        location: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        DataError::Item {
            path: path.as_ref().to_path_buf(),
            location: location.into(),
            msg: msg.into(),
        }
    }

    /// A missing file or folder with a hint on how to create or find it.
    pub fn not_found(path: impl AsRef<Path>, hint: impl Into<String>) -> Self {
        DataError::NotFound {
            path: path.as_ref().to_path_buf(),
            hint: hint.into(),
        }
    }

    /// An invalid option value.
    pub fn option(option: impl Into<String>, msg: impl Into<String>) -> Self {
        DataError::Option {
            option: option.into(),
            msg: msg.into(),
        }
    }
}

/// Opens `path` for reading; a missing file gives [`DataError::NotFound`] with `hint`.
pub fn open_file(path: &Path, hint: &str) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            DataError::not_found(path, hint)
        } else {
            DataError::io(path, err)
        }
    })
}

/// Checks that `dir` exists and is a folder; otherwise [`DataError::NotFound`] with `hint`.
pub fn require_dir(dir: &Path, hint: &str) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(DataError::item(
            dir,
            "path",
            format!("is not a folder ({hint})"),
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Err(DataError::not_found(dir, hint))
        }
        Err(err) => Err(DataError::io(dir, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_and_location() {
        let e = DataError::line("data/train.csv", 12, "expected 4 fields, found 3");
        assert_eq!(
            e.to_string(),
            "data/train.csv: line 12: expected 4 fields, found 3"
        );
        let e = DataError::field(
            "x/all__inputs.npy",
            "shape",
            "expected [N, 81], found [3, 80]",
        );
        assert_eq!(
            e.to_string(),
            "x/all__inputs.npy: field `shape`: expected [N, 81], found [3, 80]"
        );
        let e = DataError::not_found("in/train.csv", "the input folder must hold train.csv");
        assert_eq!(
            e.to_string(),
            "in/train.csv: not found (the input folder must hold train.csv)"
        );
    }

    #[test]
    fn missing_file_maps_to_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.csv");
        match open_file(&p, "hint here") {
            Err(DataError::NotFound { path, hint }) => {
                assert_eq!(path, p);
                assert_eq!(hint, "hint here");
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert!(matches!(
            require_dir(&p, "h"),
            Err(DataError::NotFound { .. })
        ));
        assert!(require_dir(dir.path(), "h").is_ok());
    }
}
