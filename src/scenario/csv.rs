//! The CSV a feeder reads: a header row, then rows of as many fields (RFC 4180 quoting: a
//! field in double quotes may hold commas, newlines and `""` for a quote). Small enough not to
//! need a crate.

/// A header and its rows.
pub type Table = (Vec<String>, Vec<Vec<String>>);

/// The 1-based line of a bad row, and why.
pub type BadRow = (usize, String);

/// The header and the rows, or the line of the first bad row and why.
pub fn parse(text: &str) -> Result<Table, BadRow> {
    let mut records = records(text)?.into_iter();
    let Some((_, header)) = records.next() else {
        return Err((
            1,
            "the file is empty; a feeder's CSV starts with a header row".into(),
        ));
    };
    if let Some(empty) = header.iter().position(|c| c.trim().is_empty()) {
        return Err((1, format!("header column {} has no name", empty + 1)));
    }
    let header: Vec<String> = header.into_iter().map(|c| c.trim().to_owned()).collect();
    let mut rows = Vec::new();
    for (line, row) in records {
        if row.len() != header.len() {
            return Err((
                line,
                format!(
                    "this row has {} column(s), the header has {} ({})",
                    row.len(),
                    header.len(),
                    header.join(",")
                ),
            ));
        }
        rows.push(row);
    }
    Ok((header, rows))
}

/// Every non-blank record with the line it starts on.
fn records(text: &str) -> Result<Vec<(usize, Vec<String>)>, BadRow> {
    let mut out = Vec::new();
    let (mut fields, mut field) = (Vec::new(), String::new());
    let (mut line, mut start_line) = (1, 1);
    let (mut quoted, mut was_quoted) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => {
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (false, '\r') => {}
            (false, '\n') => {
                end_record(&mut out, &mut fields, &mut field, start_line, was_quoted);
                was_quoted = false;
                line += 1;
                start_line = line;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err((start_line, "a quoted field is not closed".into()));
    }
    end_record(&mut out, &mut fields, &mut field, start_line, was_quoted);
    Ok(out)
}

fn end_record(
    out: &mut Vec<(usize, Vec<String>)>,
    fields: &mut Vec<String>,
    field: &mut String,
    line: usize,
    was_quoted: bool,
) {
    if fields.is_empty() && field.is_empty() && !was_quoted {
        return; // a blank line
    }
    fields.push(std::mem::take(field));
    out.push((line, std::mem::take(fields)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_line_numbers() {
        let (h, rows) = parse("a,b\n1,\"x,\"\"y\"\"\"\n\n\"multi\nline\",2\n").unwrap();
        assert_eq!(h, ["a", "b"]);
        assert_eq!(rows[0], ["1", "x,\"y\""]);
        assert_eq!(rows[1], ["multi\nline", "2"]);
        let e = parse("a,b\n1,2\n\n3\n").unwrap_err();
        assert_eq!(e.0, 4, "{e:?}");
        assert!(e.1.contains("1 column(s), the header has 2"), "{e:?}");
    }
}
