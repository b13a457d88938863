//! Raw job files: TOML → typed fields, every problem collected with the full
//! key it concerns (`chunking.max_tokens: expected …`), unknown keys reported
//! with a "did you mean …?" hint. No I/O beyond parsing the text.

use std::collections::BTreeSet;

use toml::{Table, Value};

use crate::error::did_you_mean;

/// Collects problems while reading a job table.
#[derive(Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    pub fn push(&mut self, p: impl Into<String>) {
        self.0.push(p.into());
    }
}

/// One table of the job (`[input]`, `[input.csv]`, …). Every getter records
/// the key as known; [`Section::finish`] reports the keys nobody asked for.
pub struct Section<'a> {
    prefix: String,
    table: Option<&'a Table>,
    known: BTreeSet<&'static str>,
}

impl<'a> Section<'a> {
    pub fn root(table: &'a Table) -> Self {
        Section {
            prefix: String::new(),
            table: Some(table),
            known: BTreeSet::new(),
        }
    }

    fn key(&self, k: &str) -> String {
        if self.prefix.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.prefix)
        }
    }

    fn raw(&mut self, k: &'static str) -> Option<&'a Value> {
        self.known.insert(k);
        self.table.and_then(|t| t.get(k))
    }

    /// A sub-table; missing is fine (all its fields take defaults).
    pub fn table(&mut self, k: &'static str, problems: &mut Problems) -> Section<'a> {
        let key = self.key(k);
        let table = match self.raw(k) {
            None => None,
            Some(Value::Table(t)) => Some(t),
            Some(other) => {
                problems.push(format!(
                    "{key}: expected a table ([{key}]), found {}",
                    describe(other)
                ));
                None
            }
        };
        Section {
            prefix: key,
            table,
            known: BTreeSet::new(),
        }
    }

    /// Looks at a string value without reading it.
    pub fn peek_str(&self, k: &str) -> Option<&'a str> {
        self.table.and_then(|t| t.get(k)).and_then(Value::as_str)
    }

    /// Whether `k` is set, marking it known without reading (or echoing) it.
    pub fn has(&mut self, k: &'static str) -> bool {
        self.raw(k).is_some()
    }

    pub fn is_present(&self) -> bool {
        self.table.is_some()
    }

    pub fn string(&mut self, k: &'static str, problems: &mut Problems) -> Option<String> {
        match self.raw(k)? {
            Value::String(s) => Some(s.clone()),
            other => {
                problems.push(format!(
                    "{}: expected a string, found {}",
                    self.key(k),
                    describe(other)
                ));
                None
            }
        }
    }

    pub fn required_string(&mut self, k: &'static str, problems: &mut Problems) -> Option<String> {
        let present = self.table.is_some_and(|t| t.contains_key(k));
        if !present {
            problems.push(format!("{}: required", self.key(k)));
            self.known.insert(k);
            return None;
        }
        self.string(k, problems)
    }

    pub fn boolean(&mut self, k: &'static str, problems: &mut Problems) -> Option<bool> {
        match self.raw(k)? {
            Value::Boolean(b) => Some(*b),
            other => {
                problems.push(format!(
                    "{}: expected true or false, found {}",
                    self.key(k),
                    describe(other)
                ));
                None
            }
        }
    }

    /// A number (integer or float) within `range`.
    pub fn number(
        &mut self,
        k: &'static str,
        range: std::ops::RangeInclusive<f64>,
        problems: &mut Problems,
    ) -> Option<f64> {
        let v = match self.raw(k)? {
            Value::Integer(i) => *i as f64,
            Value::Float(f) => *f,
            other => {
                problems.push(format!(
                    "{}: expected a number, found {}",
                    self.key(k),
                    describe(other)
                ));
                return None;
            }
        };
        if !range.contains(&v) {
            problems.push(format!(
                "{}: must be between {} and {}, found {v}",
                self.key(k),
                range.start(),
                range.end()
            ));
            return None;
        }
        Some(v)
    }

    /// Two integers `[min, max]` with `1 <= min <= max`.
    pub fn int_range(
        &mut self,
        k: &'static str,
        problems: &mut Problems,
    ) -> Option<(usize, usize)> {
        let v = self.raw(k)?;
        let pair = v.as_array().and_then(|a| match a.as_slice() {
            [Value::Integer(a), Value::Integer(b)] if 1 <= *a && a <= b => {
                Some((*a as usize, *b as usize))
            }
            _ => None,
        });
        if pair.is_none() {
            problems.push(format!(
                "{}: expected [min, max] with 1 <= min <= max, e.g. [1, 2]; found {}",
                self.key(k),
                describe(v)
            ));
        }
        pair
    }

    /// A non-negative integer no smaller than `min`.
    pub fn count(&mut self, k: &'static str, min: usize, problems: &mut Problems) -> Option<usize> {
        match self.raw(k)? {
            Value::Integer(i) if *i >= min as i64 => Some(*i as usize),
            Value::Integer(i) => {
                problems.push(format!(
                    "{}: must be at least {min}, found {i}",
                    self.key(k)
                ));
                None
            }
            other => {
                problems.push(format!(
                    "{}: expected an integer, found {}",
                    self.key(k),
                    describe(other)
                ));
                None
            }
        }
    }

    pub fn strings(&mut self, k: &'static str, problems: &mut Problems) -> Option<Vec<String>> {
        let key = self.key(k);
        match self.raw(k)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    match v {
                        Value::String(s) => out.push(s.clone()),
                        other => problems.push(format!(
                            "{key}[{i}]: expected a string, found {}",
                            describe(other)
                        )),
                    }
                }
                Some(out)
            }
            other => {
                problems.push(format!(
                    "{key}: expected a list of strings, found {}",
                    describe(other)
                ));
                None
            }
        }
    }

    /// One of `choices`.
    pub fn choice(
        &mut self,
        k: &'static str,
        choices: &[&'static str],
        problems: &mut Problems,
    ) -> Option<&'static str> {
        let s = self.string(k, problems)?;
        let found = choices.iter().find(|c| c.eq_ignore_ascii_case(&s)).copied();
        if found.is_none() {
            problems.push(self.not_one_of(k, &s, choices));
        }
        found
    }

    /// The variant of an option enum ([`crate::names`]) named at `k`.
    pub fn value<T: clap::ValueEnum>(
        &mut self,
        k: &'static str,
        problems: &mut Problems,
    ) -> Option<T> {
        let s = self.string(k, problems)?;
        let found = crate::names::parse::<T>(&s);
        if found.is_none() {
            let names = crate::names::names_of::<T>();
            problems.push(self.not_one_of(k, &s, &names));
        }
        found
    }

    /// `key: "s" is not one of "a", "b" (did you mean "a"?)`.
    fn not_one_of(&self, k: &str, s: &str, choices: &[impl AsRef<str>]) -> String {
        let hint = did_you_mean(s, choices.iter().map(AsRef::as_ref))
            .map(|c| format!(" (did you mean \"{c}\"?)"))
            .unwrap_or_default();
        let listed: Vec<String> = choices
            .iter()
            .map(|c| format!("\"{}\"", c.as_ref()))
            .collect();
        format!(
            "{}: \"{s}\" is not one of {}{hint}",
            self.key(k),
            listed.join(", ")
        )
    }

    /// A single ASCII character (CSV delimiter, quote, …); `\t` is accepted for tab.
    pub fn byte(&mut self, k: &'static str, problems: &mut Problems) -> Option<u8> {
        let s = self.string(k, problems)?;
        let s = if s == "\\t" { "\t".to_string() } else { s };
        match s.as_bytes() {
            [b] if b.is_ascii() => Some(*b),
            _ => {
                problems.push(format!(
                    "{}: expected one ASCII character, found \"{s}\"",
                    self.key(k)
                ));
                None
            }
        }
    }

    /// Reports keys that no getter asked for.
    pub fn finish(self, problems: &mut Problems) {
        let Some(table) = self.table else { return };
        for k in table.keys() {
            if !self.known.contains(k.as_str()) {
                let hint = did_you_mean(k, self.known.iter().copied())
                    .map(|c| format!("; did you mean '{}'?", self.key(c)))
                    .unwrap_or_else(|| {
                        format!(
                            "; known keys here: {}",
                            self.known.iter().copied().collect::<Vec<_>>().join(", ")
                        )
                    });
                problems.push(format!("{}: unknown key{hint}", self.key(k)));
            }
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string \"{s}\""),
        Value::Integer(i) => format!("the integer {i}"),
        Value::Float(f) => format!("the number {f}"),
        Value::Boolean(b) => format!("{b}"),
        Value::Datetime(d) => format!("the date {d}"),
        Value::Array(_) => "a list".to_string(),
        Value::Table(_) => "a table".to_string(),
    }
}

/// Applies a `--set key.path=value` override to a job table. The value is
/// read as TOML when it parses as such (`10`, `true`, `["a","b"]`, `"x"`),
/// otherwise taken as a plain string.
pub fn apply_set(table: &mut Table, assignment: &str) -> Result<(), String> {
    let (key, value) = assignment.split_once('=').ok_or_else(|| {
        format!("--set {assignment}: expected key=value, e.g. --set chunking.max_tokens=128")
    })?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("--set {assignment}: bad key '{key}'"));
    }
    let value = parse_value(value);
    let mut t = table;
    for p in &parts[..parts.len() - 1] {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        t = match entry {
            Value::Table(t) => t,
            _ => return Err(format!("--set {assignment}: '{p}' is not a table")),
        };
    }
    t.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

fn parse_value(s: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {s}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(s.to_string())),
        Err(_) => Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_problem() {
        let t: Table = toml::from_str(
            r#"
            [input]
            path = 1
            text_colum = "x"
            [chunking]
            max_tokens = "many"
            "#,
        )
        .unwrap();
        let mut p = Problems::default();
        let mut root = Section::root(&t);
        let mut input = root.table("input", &mut p);
        input.required_string("path", &mut p);
        input.string("text_column", &mut p);
        input.finish(&mut p);
        let mut chunking = root.table("chunking", &mut p);
        chunking.count("max_tokens", 1, &mut p);
        chunking.finish(&mut p);
        root.finish(&mut p);
        assert_eq!(
            p.0,
            vec![
                "input.path: expected a string, found the integer 1",
                "input.text_colum: unknown key; did you mean 'input.text_column'?",
                "chunking.max_tokens: expected an integer, found the string \"many\"",
            ]
        );
    }

    #[test]
    fn set_parses_toml_or_keeps_strings() {
        let mut t = Table::new();
        apply_set(&mut t, "chunking.max_tokens=128").unwrap();
        apply_set(&mut t, "output.path=out/x.parquet").unwrap();
        apply_set(&mut t, "input.columns=[\"a\", \"b\"]").unwrap();
        assert_eq!(t["chunking"]["max_tokens"].as_integer(), Some(128));
        assert_eq!(t["output"]["path"].as_str(), Some("out/x.parquet"));
        assert_eq!(t["input"]["columns"].as_array().unwrap().len(), 2);
        assert!(apply_set(&mut t, "novalue").is_err());
    }
}
