//! Diagnostics for configuration files: typed reading of TOML tables that collects every error
//! at once, each with file, line, column, the field it concerns and a hint saying what to do.
//!
//! The roster (this crate) and the site configs (the node) are both read through [`Fields`], so
//! that an operator sees the same kind of message for every file. Semantic checks that run after
//! reading (duplicate ids, ports, cross-file references) point at a field by its dotted path;
//! [`Checker`] remembers where each field was read.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, Item, Table};

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the file as a whole.
    pub line: usize,
    /// 1-based column; 0 when the problem concerns the file as a whole.
    pub column: usize,
    /// Dotted path of the field, such as `listen.web` or `site[2].peer_id`; empty for the file.
    pub field: String,
    pub message: String,
    /// What the operator should do about it.
    pub hint: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": error: ")?;
        if !self.field.is_empty() {
            write!(f, "`{}`: ", self.field)?;
        }
        write!(f, "{}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// Collects the diagnostics of one file and remembers where each field was read.
#[derive(Debug)]
pub struct Checker {
    file: PathBuf,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    locations: HashMap<String, (usize, usize)>,
    found: Vec<Diagnostic>,
}

impl Checker {
    pub fn new(file: &Path, text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Checker {
            file: file.to_path_buf(),
            line_starts,
            locations: HashMap::new(),
            found: Vec::new(),
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let column = offset - self.line_starts[line.saturating_sub(1)] + 1;
        (line, column)
    }

    fn push(&mut self, (line, column): (usize, usize), field: &str, message: String, hint: &str) {
        self.found.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            field: field.to_owned(),
            message,
            hint: hint.to_owned(),
        });
    }

    /// Records a problem at a byte span of the file (or of the file as a whole).
    pub fn error_at_span(
        &mut self,
        span: Option<Range<usize>>,
        field: &str,
        msg: String,
        hint: &str,
    ) {
        let at = span.map(|s| self.line_col(s.start)).unwrap_or((0, 0));
        self.push(at, field, msg, hint);
    }

    /// Records a problem with a field read earlier through [`Fields`], at the place it was read.
    pub fn error(&mut self, field: &str, message: impl Into<String>, hint: &str) {
        let at = self.locations.get(field).copied().unwrap_or((0, 0));
        self.push(at, field, message.into(), hint);
    }

    /// Parses the text as TOML; a syntax error is recorded and ends the reading of this file.
    pub fn parse(&mut self, text: &str) -> Option<ImDocument<String>> {
        match ImDocument::parse(text.to_owned()) {
            Ok(doc) => Some(doc),
            Err(e) => {
                let message = format!("invalid TOML: {}", e.message().trim_end());
                self.error_at_span(e.span(), "", message, "fix the syntax at this place");
                None
            }
        }
    }

    pub fn has_errors(&self) -> bool {
        !self.found.is_empty()
    }

    pub fn into_diagnostics(self) -> Vec<Diagnostic> {
        self.found
    }
}

/// A value that can be read from a TOML item.
pub trait FromItem: Sized {
    /// What a user should write, for messages: "a string", "an address like ...".
    const EXPECTED: &'static str;

    fn from_item(item: &Item) -> Option<Self>;
}

impl FromItem for String {
    const EXPECTED: &'static str = "a string";

    fn from_item(item: &Item) -> Option<Self> {
        item.as_str().map(str::to_owned)
    }
}

impl FromItem for PathBuf {
    const EXPECTED: &'static str = "a path (string)";

    fn from_item(item: &Item) -> Option<Self> {
        item.as_str().filter(|s| !s.is_empty()).map(PathBuf::from)
    }
}

impl FromItem for u32 {
    const EXPECTED: &'static str = "a whole number from 0 to 4294967295";

    fn from_item(item: &Item) -> Option<Self> {
        item.as_integer().and_then(|i| u32::try_from(i).ok())
    }
}

impl FromItem for bool {
    const EXPECTED: &'static str = "true or false";

    fn from_item(item: &Item) -> Option<Self> {
        item.as_bool()
    }
}

impl FromItem for SocketAddr {
    const EXPECTED: &'static str = "an address with a port, like \"0.0.0.0:8443\"";

    fn from_item(item: &Item) -> Option<Self> {
        item.as_str().and_then(|s| s.parse().ok())
    }
}

impl FromItem for Vec<String> {
    const EXPECTED: &'static str = "a list of strings";

    fn from_item(item: &Item) -> Option<Self> {
        item.as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect()
    }
}

/// Reads the fields of one TOML table, recording every missing, malformed and unknown field.
#[derive(Debug)]
pub struct Fields<'t> {
    table: &'t Table,
    /// Dotted path of this table, empty for the root.
    path: String,
    known: BTreeSet<&'static str>,
}

impl<'t> Fields<'t> {
    pub fn root(doc: &'t ImDocument<String>) -> Self {
        Fields {
            table: doc.as_table(),
            path: String::new(),
            known: BTreeSet::new(),
        }
    }

    fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn lookup(&mut self, c: &mut Checker, key: &'static str) -> Option<(&'t Item, String)> {
        self.known.insert(key);
        let path = self.field_path(key);
        let (k, item) = self.table.get_key_value(key)?;
        let span = item.span().or_else(|| k.span());
        let at = span.map(|s| c.line_col(s.start)).unwrap_or((0, 0));
        c.locations.insert(path.clone(), at);
        Some((item, path))
    }

    /// An optional field: `None` when absent or malformed (malformed is recorded).
    pub fn optional<T: FromItem>(&mut self, c: &mut Checker, key: &'static str) -> Option<T> {
        let (item, path) = self.lookup(c, key)?;
        let value = T::from_item(item);
        if value.is_none() {
            let found = item
                .as_value()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "a table".into());
            let message = format!("expected {}, found {}", T::EXPECTED, found.trim());
            c.error_at_span(item.span(), &path, message, "correct the value");
        }
        value
    }

    /// A required field: `None` when absent (recorded with `hint`) or malformed (recorded).
    pub fn required<T: FromItem>(
        &mut self,
        c: &mut Checker,
        key: &'static str,
        hint: &str,
    ) -> Option<T> {
        if self.table.contains_key(key) {
            return self.optional(c, key);
        }
        self.known.insert(key);
        let path = self.field_path(key);
        let message = format!("missing required field `{key}` ({})", T::EXPECTED);
        c.error_at_span(self.table.span(), &path, message, hint);
        None
    }

    /// A sub-table such as `[listen]`; `None` when absent or not a table (recorded).
    pub fn table(&mut self, c: &mut Checker, key: &'static str) -> Option<Fields<'t>> {
        let (item, path) = self.lookup(c, key)?;
        match item.as_table() {
            Some(table) => Some(Fields {
                table,
                path,
                known: BTreeSet::new(),
            }),
            None => {
                let message = format!("expected a table `[{path}]`");
                c.error_at_span(item.span(), &path, message, "write it as a [section]");
                None
            }
        }
    }

    /// An array of tables such as `[[rooms]]`; empty when absent or malformed (recorded).
    pub fn tables(&mut self, c: &mut Checker, key: &'static str) -> Vec<Fields<'t>> {
        let Some((item, path)) = self.lookup(c, key) else {
            return Vec::new();
        };
        match item.as_array_of_tables() {
            Some(array) => array
                .iter()
                .enumerate()
                .map(|(i, table)| Fields {
                    table,
                    path: format!("{path}[{i}]"),
                    known: BTreeSet::new(),
                })
                .collect(),
            None => {
                let message = format!("expected an array of tables `[[{path}]]`");
                c.error_at_span(item.span(), &path, message, "write each entry as [[...]]");
                Vec::new()
            }
        }
    }

    /// The dotted path of a field of this table, for [`Checker::error`].
    pub fn path_of(&self, key: &str) -> String {
        self.field_path(key)
    }

    /// Records every key of the table that was never asked for.
    pub fn finish(self, c: &mut Checker) {
        for (key, item) in self.table.iter() {
            if self.known.contains(key) {
                continue;
            }
            let span = self
                .table
                .key(key)
                .and_then(|k| k.span())
                .or_else(|| item.span());
            let hint = match closest(key, &self.known) {
                Some(near) => format!("did you mean `{near}`?"),
                None => {
                    let list: Vec<_> = self.known.iter().copied().collect();
                    format!("known keys here: {}", list.join(", "))
                }
            };
            c.error_at_span(
                span,
                &self.field_path(key),
                format!("unknown key `{key}`"),
                &hint,
            );
        }
    }
}

/// The known key nearest to `key` by edit distance, if it is near enough to be a typo.
fn closest<'k>(key: &str, known: &BTreeSet<&'k str>) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Diagnostic> {
        let mut c = Checker::new(Path::new("x.toml"), text);
        let doc = c.parse(text).expect("valid toml");
        let mut root = Fields::root(&doc);
        let _: Option<String> = root.required(&mut c, "site", "name the site");
        let _: Option<u32> = root.optional(&mut c, "uplink_kbps");
        if let Some(mut listen) = root.table(&mut c, "listen") {
            let _: Option<SocketAddr> = listen.optional(&mut c, "web");
            listen.finish(&mut c);
        }
        root.finish(&mut c);
        c.into_diagnostics()
    }

    #[test]
    fn reports_every_error_with_line_and_hint() {
        let found = read("uplink_kbps = -3\nsiet = \"a\"\n[listen]\nweb = \"nowhere\"\n");
        let summary: Vec<_> = found.iter().map(|d| (d.line, d.field.as_str())).collect();
        assert_eq!(
            summary,
            [
                (1, "site"),
                (1, "uplink_kbps"),
                (4, "listen.web"),
                (2, "siet")
            ],
            "{found:#?}"
        );
        assert!(
            found[3].hint.contains("did you mean `site`"),
            "{}",
            found[3]
        );
        assert!(found[2].message.contains("0.0.0.0:8443"), "{}", found[2]);
    }

    #[test]
    fn syntax_error_has_a_position() {
        let mut c = Checker::new(Path::new("x.toml"), "a = \n");
        assert!(c.parse("a = \n").is_none());
        let found = c.into_diagnostics();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, 1);
        assert!(
            found[0].to_string().starts_with("x.toml:1:"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("siet", "site"), 2);
        assert_eq!(edit_distance("data_dir", "data_dir"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
