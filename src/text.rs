//! Where a row's text comes from: one column, or several joined by a
//! template such as `"{title}\n\n{text}"`.

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema};

use crate::{Error, Result};

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq)]
enum Part {
    Literal(String),
    Column(String),
}

/// How to build each row's text.
#[derive(Clone, Debug, PartialEq)]
pub struct TextSpec {
    parts: Vec<Part>,
}

impl TextSpec {
    /// The text is one column, used as is.
    pub fn column(name: &str) -> Self {
        TextSpec {
            parts: vec![Part::Column(name.to_string())],
        }
    }

    /// The column, when the text is exactly one column.
    pub fn as_column(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Column(c)] => Some(c),
            _ => None,
        }
    }

    /// Parses a template: `{name}` inserts a column, `{{` and `}}` are literal braces.
    pub fn template(t: &str) -> std::result::Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = t.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("unclosed '{{' in template \"{t}\"")),
                        }
                    }
                    let name = name.trim();
                    if name.is_empty() {
                        return Err(format!("empty '{{}}' in template \"{t}\""));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Column(name.to_string()));
                }
                '}' => {
                    return Err(format!(
                        "unmatched '}}' in template \"{t}\" (write '}}}}' for a literal brace)"
                    ));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        if !parts.iter().any(|p| matches!(p, Part::Column(_))) {
            return Err(format!("template \"{t}\" names no column (use {{column}})"));
        }
        Ok(TextSpec { parts })
    }

    /// The columns the text is made of, in order of first use.
    pub fn columns(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.parts {
            if let Part::Column(c) = p
                && !out.contains(c)
            {
                out.push(c.clone());
            }
        }
        out
    }

    fn is_single_column(&self) -> bool {
        self.parts.len() == 1
    }

    /// Checks the columns exist and have a usable type. A single text column
    /// must be a string; template columns may be anything arrow can cast to text.
    pub fn check(&self, schema: &Schema, file: &str) -> Result<()> {
        for c in self.columns() {
            let field = schema
                .field_with_name(&c)
                .map_err(|_| Error::missing_column(file, &c, schema))?;
            let ty = field.data_type();
            let ok = if self.is_single_column() {
                is_string(ty)
            } else {
                arrow::compute::can_cast_types(ty, &DataType::Utf8)
            };
            if !ok {
                let want = if self.is_single_column() {
                    "a string column (utf8)"
                } else {
                    "a column that can be shown as text"
                };
                return Err(Error::input(
                    file,
                    format!("column '{c}' has type {ty}; expected {want}"),
                ));
            }
        }
        Ok(())
    }

    /// Renders each row's text; `None` where the text is null (a single null
    /// column, or every column of a template null).
    pub fn render(&self, batch: &RecordBatch) -> Result<Vec<Option<String>>> {
        let cols: Vec<(String, StringArray)> = self
            .columns()
            .into_iter()
            .map(|c| {
                let a = batch
                    .column_by_name(&c)
                    .ok_or_else(|| Error::internal(format!("text column '{c}' not read")))?;
                Ok((c, as_utf8(a)?))
            })
            .collect::<Result<_>>()?;
        let get = |name: &str| {
            &cols
                .iter()
                .find(|(c, _)| c == name)
                .expect("column rendered")
                .1
        };
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            if cols.iter().all(|(_, a)| a.is_null(row)) {
                out.push(None);
                continue;
            }
            let mut s = String::new();
            for p in &self.parts {
                match p {
                    Part::Literal(l) => s.push_str(l),
                    Part::Column(c) => {
                        let a = get(c);
                        if a.is_valid(row) {
                            s.push_str(a.value(row));
                        }
                    }
                }
            }
            out.push(Some(s));
        }
        Ok(out)
    }
}

fn is_string(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) || matches!(ty, DataType::Dictionary(_, v) if is_string(v))
}

fn as_utf8(a: &ArrayRef) -> Result<StringArray> {
    let c = cast(a, &DataType::Utf8).map_err(|e| Error::internal(format!("cast to text: {e}")))?;
    Ok(c.as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::internal("cast to utf8 gave another type"))?
        .clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::Field;
    use std::sync::Arc;

    #[test]
    fn parses_templates_with_escapes() {
        let t = TextSpec::template("{title}\n\n{{not}} {text}").unwrap();
        assert_eq!(t.columns(), vec!["title", "text"]);
        assert_eq!(
            TextSpec::template("{a").unwrap_err(),
            "unclosed '{' in template \"{a\""
        );
        assert_eq!(
            TextSpec::template("plain").unwrap_err(),
            "template \"plain\" names no column (use {column})"
        );
    }

    #[test]
    fn renders_rows_and_nulls() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("title", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("A"), None, None])),
                Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
            ],
        )
        .unwrap();
        let t = TextSpec::template("{title}: #{n}").unwrap();
        assert_eq!(
            t.render(&batch).unwrap(),
            vec![Some("A: #1".to_string()), Some(": #2".to_string()), None]
        );
        let e = TextSpec::column("n")
            .check(&batch.schema(), "f.csv")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "input f.csv: column 'n' has type Int64; expected a string column (utf8)"
        );
        let e = TextSpec::column("body")
            .check(&batch.schema(), "f.csv")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "input f.csv: no column 'body'; the columns are: title, n"
        );
    }
}
