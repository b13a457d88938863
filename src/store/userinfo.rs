//! Credentials written into a URL (`s3://KEY:SECRET@bucket/key`,
//! `http://user:password@host`): refused by name, never echoed. A URL with
//! userinfo would send the secret in requests (as a bucket name, or to the
//! HTTP client, whose connection logs print URLs) and print it in messages.

use crate::{Error, Result};

/// The userinfo of a URL (`user:password` in `scheme://user:password@host/…`),
/// if it has one: what comes before the last `@` of the authority.
fn userinfo(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit_once('@').map(|(info, _)| info)
}

/// `url` with its userinfo replaced by `***`: all that may be shown of it.
pub fn redact_url(url: &str) -> String {
    match (userinfo(url), url.split_once("://")) {
        (Some(info), Some((scheme, rest))) => {
            format!("{scheme}://***{}", &rest[info.len()..])
        }
        _ => url.to_string(),
    }
}

/// Refuses a URL that carries credentials, naming it (`what`: the field,
/// flag or variable it came from) without them.
pub fn refuse_userinfo(what: &str, url: &str) -> Result<()> {
    if userinfo(url).is_none() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{what} {}: credentials in a URL are refused (they would travel in every request and show in logs); remove the user:password@ part and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the environment",
        redact_url(url)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_found_and_never_shown() {
        for (url, shown) in [
            ("s3://AKIA:wJalrX@bucket/key", "s3://***@bucket/key"),
            ("s3://AKIA@bucket", "s3://***@bucket"),
            (
                "http://user:wJalrX@127.0.0.1:9000",
                "http://***@127.0.0.1:9000",
            ),
            ("https://u:p@w@host/x?y", "https://***@host/x?y"),
        ] {
            assert_eq!(redact_url(url), shown);
            let e = refuse_userinfo("s3.endpoint", url).unwrap_err().to_string();
            assert!(!e.contains("wJalrX") && !e.contains("AKIA"), "{e}");
            assert!(e.contains(shown), "{e}");
        }
        for url in [
            "s3://bucket/a@b.parquet",
            "http://127.0.0.1:9000",
            "in.parquet",
            "a@b",
        ] {
            assert_eq!(redact_url(url), url);
            assert!(refuse_userinfo("x", url).is_ok());
        }
    }
}
