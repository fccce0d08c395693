//! Server URLs as every HTTP sink takes them: checked at load with an error that says how to
//! write one, and printed with any password in them replaced by `***`.

use reqwest::Url;

/// The URL as it may be printed: a password in it (`http://user:PASS@host`) becomes `***`.
pub fn redacted_url(url: &Url) -> String {
    if url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Cannot fail: the URL has a host (it carried a password).
    let _ = shown.set_password(Some("***"));
    shown.to_string()
}

/// Like [`redacted_url`] for text that may not parse as a URL (config errors).
pub fn redacted_url_text(text: &str) -> String {
    match Url::parse(text) {
        Ok(u) => redacted_url(&u),
        Err(_) => match (text.find("://"), text.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}://***@{}", &text[..scheme_end], &text[at + 1..])
            }
            _ => text.to_string(),
        },
    }
}

/// An `http://` or `https://` URL, or (problem, fix) for the config error; `how_to_write` is
/// the fix for text that is no URL at all (`write it like "http://127.0.0.1:8086"`).
pub fn parse_http_url(
    text: &str,
    how_to_write: &'static str,
) -> Result<Url, (String, &'static str)> {
    let url = Url::parse(text).map_err(|e| {
        (
            format!("{:?} is not a URL ({e})", redacted_url_text(text)),
            how_to_write,
        )
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err((
            format!("scheme {:?} is not supported", url.scheme()),
            "use http:// or https://",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_and_bad_urls_say_how() {
        let u = Url::parse("http://user:secret@db:8086/x").unwrap();
        assert_eq!(redacted_url(&u), "http://user:***@db:8086/x");
        assert_eq!(
            redacted_url_text("http://user:secret@db:bad"),
            "http://***@db:bad"
        );
        let how = "write it like \"http://db:8086\"";
        let (problem, hint) = parse_http_url("udp://db:1", how).unwrap_err();
        assert!(problem.contains("udp"), "{problem}");
        assert_eq!(hint, "use http:// or https://");
        let (problem, hint) = parse_http_url("not a url", how).unwrap_err();
        assert!(problem.contains("not a URL"), "{problem}");
        assert_eq!(hint, how);
        assert!(parse_http_url("https://db:8086/api", "x").is_ok());
    }
}
