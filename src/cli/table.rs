//! Aligned two-column tables for results, and flat JSON objects for machines.

use std::fmt::Write;

/// A table of `(label, value)` rows.
#[derive(Default)]
pub struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    /// Adds a row.
    pub fn row(&mut self, label: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.rows.push((label.into(), value.into()));
        self
    }

    /// The table as text, labels padded to one column.
    pub fn render(&self) -> String {
        let w = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut s = String::new();
        for (l, v) in &self.rows {
            let _ = writeln!(s, "  {l:<w$}  {v}");
        }
        s
    }
}

/// Writes `report` (a struct serializing to one flat object) to `path` as pretty JSON.
pub fn write_json(
    out: &super::checks::Output,
    report: &impl serde::Serialize,
) -> anyhow::Result<()> {
    // Through a `Value`, whose map is sorted (serde_json without `preserve_order`), so the keys
    // come out in the same alphabetical order whatever the struct layout, and saved reports
    // diff cleanly across versions.
    let value = serde_json::to_value(report)?;
    let text = serde_json::to_string_pretty(&value)?;
    out.write((text + "\n").as_bytes())
}
