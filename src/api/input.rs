//! Checks on what people send the API: JSON bodies, names and comments.

use serde::de::DeserializeOwned;

use super::ApiError;

/// Longest accepted name of a person (`by`, `created_by`).
pub const MAX_NAME: usize = 100;
/// Longest accepted comment.
pub const MAX_COMMENT: usize = 2000;

/// The body as `T`, or a 400 saying what is wrong and where.
pub fn json_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{what}: the body is empty; send a JSON object (Content-Type: application/json)"
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "{what}: the body is not valid: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// An id of 16 hex digits (`prefix` allowed before them), or a 400 naming what it is not
/// and where the ids are listed.
pub fn hex_id(id: &str, prefix: &str, what: &str, listed_by: &str) -> Result<(), ApiError> {
    let hex = id.strip_prefix(prefix).unwrap_or(id);
    if hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{id:?} is not {what} (16 hex digits, the `id` of {listed_by})"
        )))
    }
}

/// A person's name: required, trimmed, printable, at most [`MAX_NAME`] characters.
pub fn person(key: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "`{key}` is required: the name of the person making the change (it goes into the log and the history)"
        )));
    }
    printable(key, v, MAX_NAME)?;
    Ok(v.to_string())
}

/// A free-text comment: trimmed, at most [`MAX_COMMENT`] characters, no control characters
/// but newlines and tabs.
pub fn comment(key: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    printable(key, v, MAX_COMMENT)?;
    Ok(v.to_string())
}

fn printable(key: &str, v: &str, max: usize) -> Result<(), ApiError> {
    let chars = v.chars().count();
    if chars > max {
        return Err(ApiError::BadRequest(format!(
            "`{key}` is {chars} characters long; at most {max} are accepted"
        )));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::BadRequest(format!(
            "`{key}` contains control characters; send plain text"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_and_comments_are_checked() {
        assert_eq!(person("by", "  alice ").unwrap(), "alice");
        assert_eq!(person("by", " ").unwrap_err().status(), 400);
        assert!(person("by", &"x".repeat(101)).is_err());
        assert!(person("by", "a\u{1b}[31m").is_err());
        assert_eq!(comment("comment", "").unwrap(), "");
        assert_eq!(
            comment("comment", "line 1\nline 2").unwrap(),
            "line 1\nline 2"
        );
        let e = json_body::<serde_json::Value>(b"{\"by\": ", "acknowledge").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("acknowledge: the body is not valid"),
            "{e}"
        );
        assert!(json_body::<serde_json::Value>(b"", "x").is_err());
    }

    proptest! {
        #[test]
        fn any_input_is_accepted_or_refused_without_panic(s in ".{0,300}", b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = person("by", &s);
            let _ = comment("comment", &s);
            let _ = json_body::<serde_json::Value>(&b, "x");
        }
    }
}
