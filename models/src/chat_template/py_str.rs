//! Python's idea of whitespace in the string methods templates call. Python's `str.strip()`,
//! `split()` and Jinja's `|trim` also drop U+001C-U+001F (`str.isspace`), which Rust's
//! `char::is_whitespace` (and so minijinja's builtins) keeps: a message ending in one of them
//! would render differently from Hugging Face.

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, State};

/// Python's `str.isspace` for one character.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `|trim(chars=None)`: Python's `str.strip`.
pub fn trim(s: &str, chars: Option<&str>) -> String {
    strip(s, chars, true, true)
}

fn strip(s: &str, chars: Option<&str>, left: bool, right: bool) -> String {
    let drop = |c: char| match chars {
        Some(set) => set.contains(c),
        None => is_py_space(c),
    };
    let mut t = s;
    if left {
        t = t.trim_start_matches(drop);
    }
    if right {
        t = t.trim_end_matches(drop);
    }
    t.to_string()
}

/// The methods whose whitespace rule differs; everything else goes to minijinja-contrib's
/// Python methods.
pub fn unknown_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if value.kind() == ValueKind::String {
        let s = value.as_str().unwrap_or_default();
        // `None` as the argument means Python's default, whitespace.
        let chars = match args {
            [] => Some(None),
            [a] if a.is_none() => Some(None),
            [a] => a.as_str().map(Some),
            _ => None,
        };
        if let Some(chars) = chars {
            let done = match method {
                "strip" => Some(strip(s, chars, true, true)),
                "lstrip" => Some(strip(s, chars, true, false)),
                "rstrip" => Some(strip(s, chars, false, true)),
                _ => None,
            };
            if let Some(d) = done {
                return Ok(Value::from(d));
            }
        }
        if method == "split" && (args.is_empty() || (args.len() == 1 && args[0].is_none())) {
            let parts: Vec<Value> = s
                .split(is_py_space)
                .filter(|p| !p.is_empty())
                .map(Value::from)
                .collect();
            return Ok(Value::from(parts));
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_what_python_strips() {
        assert_eq!(trim("\u{1f} a b\u{3000}\n", None), "a b");
        assert_eq!(trim("xxaxx", Some("x")), "a");
        assert_eq!(strip("  a  ", None, false, true), "  a");
    }
}
