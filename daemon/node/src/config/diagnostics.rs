//! Located, explained config problems (file, line, column, key, hint).

use super::*;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One mistake in a config file, located and explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line and column; 0 when the mistake has no single place (e.g. a missing section).
    pub line: usize,
    pub col: usize,
    /// Dotted key path, e.g. `members[2].peer_id`.
    pub key: String,
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, " ({})", self.hint)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}; check the path (relative paths in node.toml are relative to node.toml's directory)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), list(.0))]
    Invalid(Vec<Problem>),
}

pub(crate) fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The problems, if this is a validation error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// Collects problems for one file and turns byte spans into line:col.
pub(crate) struct Report<'a> {
    pub(crate) file: &'a Path,
    pub(crate) src: &'a str,
    pub(crate) problems: Vec<Problem>,
}

impl<'a> Report<'a> {
    pub(crate) fn new(file: &'a Path, src: &'a str) -> Self {
        Self {
            file,
            src,
            problems: Vec::new(),
        }
    }

    pub(crate) fn at(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let (line, col) = span.map(|s| line_col(self.src, s.start)).unwrap_or((0, 0));
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line,
            col,
            key: key.into(),
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// Reports a file that did not deserialize: every syntax error found
    /// (see [`syntax_errors`]), or else the one type error.
    pub(crate) fn toml_errors(&mut self, err: &toml::de::Error) {
        let syntax = syntax_errors(self.src);
        if syntax.is_empty() {
            self.toml_error(err);
        }
        for e in &syntax {
            self.toml_error(e);
        }
    }

    pub(crate) fn toml_error(&mut self, err: &toml::de::Error) {
        // One line per problem: toml puts what it expected on a second line.
        let message = err.message().trim().replace('\n', "; ");
        if message.is_empty() {
            // toml names some syntax errors with no words at all (a control
            // character in a comment, for one): say what is at the spot.
            let at = err
                .span()
                .and_then(|s| self.src.get(s.start..))
                .and_then(|rest| rest.chars().next());
            let (message, hint) = match at {
                Some(c) if c.is_control() => (
                    format!(
                        "control character U+{:04X} is not allowed in TOML",
                        u32::from(c)
                    ),
                    "remove it; TOML allows no control characters but tab, even in comments",
                ),
                Some(c) => (
                    format!("invalid TOML syntax at {c:?}"),
                    "fix the syntax; the example configs in deploy/ show every key",
                ),
                None => (
                    "invalid TOML syntax".to_string(),
                    "fix the syntax; the example configs in deploy/ show every key",
                ),
            };
            self.at(err.span(), "", message, hint);
            return;
        }
        let syntax = toml::from_str::<toml::Table>(self.src).is_err();
        let hint = if syntax {
            "fix the syntax; the TOML parser stops at a syntax error, so the check reads on from the next line: an error named after this one may follow from it"
        } else if message.contains("unknown field") {
            "remove it or fix its spelling; the example configs in deploy/ list every option"
        } else if message.contains("missing field") {
            "add it; the example configs in deploy/ show every required key"
        } else {
            "fix the value's syntax or type"
        };
        // Name the key of a mistake in [sources] (toml's error carries only its span).
        let key = err
            .span()
            .and_then(|s| sibyl_feeds::config::key_at(self.src, s.start))
            .filter(|k| k.starts_with("sources."))
            .unwrap_or_default();
        self.at(err.span(), key, message, hint);
    }
}

/// Every TOML syntax error of `src` that can be found: the TOML parser
/// stops at the first, so the line it names is blanked (byte offsets kept)
/// and the text parsed again, up to 20 times. A later error can follow from
/// an earlier one (an unclosed array), but each one named is on its own line.
/// Empty when the text is valid TOML.
pub(crate) fn syntax_errors(src: &str) -> Vec<toml::de::Error> {
    let mut text = src.as_bytes().to_vec();
    let mut errors = Vec::new();
    let mut blanked = BTreeSet::new();
    while errors.len() < 20 {
        let Ok(current) = std::str::from_utf8(&text) else {
            break;
        };
        let Err(e) = toml::from_str::<toml::Table>(current) else {
            break;
        };
        let Some(span) = e.span() else {
            errors.push(e);
            break;
        };
        let at = span.start.min(text.len());
        let start = text[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let end = text[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| at + i);
        errors.push(e);
        if !blanked.insert(start) {
            break;
        }
        for b in &mut text[start..end] {
            *b = b' ';
        }
    }
    errors
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}
