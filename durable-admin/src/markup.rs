//! Text made safe for the pages and the SVG: HTML/XML escaping and URL encoding.

use std::fmt::Write;

/// `text` with `&`, `<`, `>`, `"` and `'` escaped for HTML and XML.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` percent-encoded as one URL path segment, or `None` when no URL can carry it.
///
/// Browsers resolve URLs per WHATWG: a `.` segment is removed and a `..` segment removes the
/// one before it, and `%2e` counts as a dot, so escaping does not help. A link to
/// `/instances/..` would open `/`, and one to `/instances/.` the instances page; such an id is
/// shown without a link instead. Every other text survives [`url_encode`] unchanged.
pub(crate) fn path_segment(text: &str) -> Option<String> {
    if text == "." || text == ".." { None } else { Some(url_encode(text)) }
}

/// `text` percent-encoded for a URL path segment or query value.
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_have_no_path_segment() {
        assert_eq!(path_segment("."), None);
        assert_eq!(path_segment(".."), None);
        assert_eq!(path_segment("..."), Some("...".to_owned()));
        assert_eq!(path_segment(".a"), Some(".a".to_owned()));
        assert_eq!(path_segment("a/.."), Some("a%2F..".to_owned()));
        assert_eq!(path_segment("%2e"), Some("%252e".to_owned()));
    }
}
