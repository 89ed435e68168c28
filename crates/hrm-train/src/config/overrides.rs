//! Loading a configuration into one TOML table: files with their `base = ...` chain merged
//! table-wise, `key=value` overrides, the per-key check against the schema, and the "did you
//! mean" suggestions of the error messages.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::errors::{one_line, ConfigError, Origin, Provenance};
use super::schema::{spec_of, Kind, SCHEMA};

/// Deepest chain of `base = ...` files followed before giving up.
const MAX_BASE_DEPTH: usize = 16;

/// Read and parse one file, following its `base` chain; records the origin of every key.
pub(super) fn load_file_chain(
    path: &Path,
    prov: &mut Provenance,
    chain: &mut Vec<PathBuf>,
) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let offset = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: one_line(e.message()),
        }
    })?;
    let own = table.clone();
    let origin = Origin::File(path.to_path_buf());
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if chain.contains(&canonical) {
        return Err(ConfigError::Invalid {
            origin,
            key: "base".into(),
            problem: "forms a cycle of base files (a file cannot inherit from itself)".into(),
        });
    }
    if chain.len() >= MAX_BASE_DEPTH {
        return Err(ConfigError::Invalid {
            origin,
            key: "base".into(),
            problem: format!("chain is deeper than {MAX_BASE_DEPTH} files"),
        });
    }
    chain.push(canonical);
    let merged = match table.remove("base") {
        None => table,
        Some(toml::Value::String(b)) => {
            let base_path = path.parent().unwrap_or(Path::new(".")).join(&b);
            if !base_path.is_file() {
                return Err(ConfigError::Invalid {
                    origin,
                    key: "base".into(),
                    problem: format!(
                        "= \"{b}\": {} not found (base paths are relative to the file)",
                        base_path.display()
                    ),
                });
            }
            let mut base = load_file_chain(&base_path, prov, chain)?;
            merge(&mut base, table);
            base
        }
        Some(other) => {
            return Err(ConfigError::WrongType {
                origin,
                key: "base".into(),
                expected: "a string (a path relative to this file)".into(),
                got: show_value(&other),
            })
        }
    };
    // Record this file as the origin of every key it sets (after its bases: it overrides them).
    record(prov, "", &own, &origin);
    prov.1.push(path.to_path_buf());
    prov.0.remove("base");
    chain.pop();
    Ok(merged)
}

/// The dotted key of `key` inside the table at `prefix` (`""` for the top level).
pub(super) fn dotted(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Record `origin` for every (dotted) key of `table`, tables included.
fn record(prov: &mut Provenance, prefix: &str, table: &toml::Table, origin: &Origin) {
    for (k, v) in table {
        let key = dotted(prefix, k);
        if let toml::Value::Table(t) = v {
            record(prov, &key, t, origin);
        }
        prov.0.insert(key, origin.clone());
    }
}

/// Merge `over` into `base` table-wise: nested tables merge, everything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Parse an override value: TOML if it parses as a single value, else a bare string. For keys
/// that take strings, the raw text is kept (`run_name=2024` is the string "2024").
fn parse_override_value(key: &str, raw: &str) -> toml::Value {
    let kind = spec_of(key).map(|s| s.kind);
    let parsed = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"));
    match (kind, parsed) {
        (Some(Kind::Str | Kind::Enum(_)), Some(v @ toml::Value::String(_))) => v,
        (Some(Kind::Str | Kind::Enum(_)), _) => toml::Value::String(raw.to_string()),
        (Some(Kind::StrList), None) if raw.starts_with('[') && raw.ends_with(']') => {
            // Hydra-style bare list: eval_save_outputs=[logits,labels].
            let inner = &raw[1..raw.len() - 1];
            let items = inner
                .split(',')
                .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\''))
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect();
            toml::Value::Array(items)
        }
        (_, Some(v)) => v,
        (_, None) => toml::Value::String(raw.to_string()),
    }
}

/// Apply one `key=value` override to the merged table.
pub(super) fn apply_override(
    table: &mut toml::Table,
    prov: &mut Provenance,
    arg: &str,
) -> Result<(), ConfigError> {
    let Some((key, raw)) = arg.split_once('=') else {
        return Err(ConfigError::OverrideSyntax {
            arg: arg.to_string(),
        });
    };
    let key = key.trim();
    let raw = raw.trim();
    let origin = Origin::Override(arg.to_string());
    let valid_key = !key.is_empty()
        && key.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !valid_key {
        return Err(ConfigError::OverrideSyntax {
            arg: arg.to_string(),
        });
    }
    if key == "base" {
        return Err(ConfigError::Invalid {
            origin,
            key: "base".into(),
            problem: "can only be set inside a config file".into(),
        });
    }
    if spec_of(key).is_none() {
        return Err(ConfigError::UnknownKey {
            origin,
            key: key.into(),
            suggestion: suggest(key),
        });
    }
    let value = parse_override_value(key, raw);
    let parts: Vec<&str> = key.split('.').collect();
    let mut t = table;
    for (i, p) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(inner) => inner,
            other => {
                let parent = parts[..=i].join(".");
                return Err(ConfigError::WrongType {
                    origin: prov.0.get(&parent).cloned().unwrap_or(origin),
                    key: parent,
                    expected: "a table".into(),
                    got: show_value(other),
                });
            }
        };
    }
    if let toml::Value::Table(sub) = &value {
        record(prov, key, sub, &origin);
    }
    t.insert(parts[parts.len() - 1].to_string(), value);
    prov.0.insert(key.to_string(), origin);
    Ok(())
}

/// A value as written in TOML, shortened for an error message.
fn show_value(v: &toml::Value) -> String {
    let s = match v {
        toml::Value::Table(_) => return "a table".into(),
        v => v.to_string(),
    };
    let s = one_line(&s);
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// Walk the merged table: reject unknown keys, check and normalise types (integers given for
/// float keys become floats), and require the required keys.
pub(super) fn check_schema(
    table: &mut toml::Table,
    prefix: &str,
    prov: &Provenance,
    top: &Origin,
) -> Result<(), ConfigError> {
    let origin_of = |key: &str| prov.0.get(key).cloned().unwrap_or_else(|| top.clone());
    for (k, v) in table.iter_mut() {
        let key = dotted(prefix, k);
        let Some(spec) = spec_of(&key) else {
            return Err(ConfigError::UnknownKey {
                origin: origin_of(&key),
                suggestion: suggest(&key),
                key,
            });
        };
        let wrong = |v: &toml::Value| ConfigError::WrongType {
            origin: origin_of(&key),
            key: key.clone(),
            expected: spec.kind.expected(),
            got: show_value(v),
        };
        match (spec.kind, &*v) {
            (Kind::Int, toml::Value::Integer(i)) if *i >= 0 => {}
            (Kind::Float, toml::Value::Float(_)) => {}
            (Kind::Float, toml::Value::Integer(i)) => *v = toml::Value::Float(*i as f64),
            (Kind::Bool, toml::Value::Boolean(_)) => {}
            (Kind::Str, toml::Value::String(_)) => {}
            (Kind::Enum(opts), toml::Value::String(s)) => {
                if !opts.contains(&s.as_str()) {
                    let hint = closest(s, opts.iter().copied())
                        .map(|c| format!(" (did you mean \"{c}\"?)"))
                        .unwrap_or_default();
                    return Err(ConfigError::WrongType {
                        origin: origin_of(&key),
                        key: key.clone(),
                        expected: spec.kind.expected(),
                        got: format!("\"{s}\"{hint}"),
                    });
                }
            }
            (Kind::StrList, toml::Value::Array(items)) => {
                if let Some(bad) = items.iter().find(|i| !i.is_str()) {
                    return Err(ConfigError::WrongType {
                        origin: origin_of(&key),
                        key: key.clone(),
                        expected: spec.kind.expected(),
                        got: format!("an array holding {}", show_value(bad)),
                    });
                }
            }
            (Kind::Table, toml::Value::Table(_)) => {}
            (_, other) => return Err(wrong(other)),
        }
        if let toml::Value::Table(sub) = v {
            check_schema(sub, &key, prov, top)?;
        }
    }
    // Required keys of this table level.
    for s in SCHEMA.iter().filter(|s| s.required) {
        let (parent, leaf) = match s.key.rsplit_once('.') {
            Some((p, l)) => (p, l),
            None => ("", s.key),
        };
        if parent == prefix && !table.contains_key(leaf) {
            return Err(ConfigError::MissingKey {
                origin: top.clone(),
                key: s.key.into(),
            });
        }
    }
    Ok(())
}

/// Levenshtein distance (on chars), for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if close enough to be a plausible typo.
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "Did you mean" for an unknown dotted key: a key with the same last component elsewhere
/// (`L_cycles` -> `arch.L_cycles`), else the closest known key by edit distance.
fn suggest(key: &str) -> Option<String> {
    let leaf = key.rsplit('.').next().unwrap_or(key).to_lowercase();
    let known = || SCHEMA.iter().map(|s| s.key);
    if let Some(k) =
        known().find(|k| k.rsplit('.').next().map(str::to_lowercase) == Some(leaf.clone()))
    {
        return Some(k.to_string());
    }
    if let Some(k) = closest(key, known()) {
        return Some(k.to_string());
    }
    // A typo in the last component of a nested key: compare within the same table.
    let parent = key.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
    let siblings: BTreeSet<&str> = known()
        .filter(|k| k.rsplit_once('.').map(|(p, _)| p).unwrap_or("") == parent)
        .collect();
    closest(key, siblings.into_iter()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("lr", "lr"), 0);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("arch.hiden_size").as_deref(),
            Some("arch.hidden_size")
        );
        assert_eq!(suggest("L_cycles").as_deref(), Some("arch.L_cycles"));
        assert_eq!(suggest("l_cycles").as_deref(), Some("arch.L_cycles"));
        assert_eq!(suggest("epoch").as_deref(), Some("epochs"));
        assert_eq!(suggest("zzzzzzzzzzzz"), None);
    }

    #[test]
    fn override_values() {
        assert_eq!(parse_override_value("lr", "7e-5"), toml::Value::Float(7e-5));
        assert_eq!(
            parse_override_value("epochs", "20000"),
            toml::Value::Integer(20000)
        );
        assert_eq!(
            parse_override_value("data_path", "data/x"),
            toml::Value::String("data/x".into())
        );
        assert_eq!(
            parse_override_value("run_name", "2024"),
            toml::Value::String("2024".into())
        );
        assert_eq!(
            parse_override_value("eval_save_outputs", "[logits, labels]"),
            toml::Value::Array(vec!["logits".into(), "labels".into()])
        );
        assert_eq!(
            parse_override_value("eval_save_outputs", "[\"logits\"]"),
            toml::Value::Array(vec!["logits".into()])
        );
        // Not a single TOML value: kept as a bare string (then rejected by the type check).
        assert_eq!(
            parse_override_value("epochs", "1\nx = 2"),
            toml::Value::String("1\nx = 2".into())
        );
    }
}
