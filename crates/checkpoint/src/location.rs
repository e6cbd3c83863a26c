//! What [`ObjectCheckpointStore::open`](crate::ObjectCheckpointStore::open) accepts, parsed
//! without touching the storage.

use std::path::PathBuf;
use std::str::FromStr;

use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path as ObjectPath;
use url::Url;

use crate::OpenError;

/// A parsed store location.
#[derive(Debug)]
pub(crate) enum Location {
    /// A local directory (relative to the working directory, or absolute).
    Local(PathBuf),
    /// A bucket and prefix on S3-compatible storage.
    S3(S3Location),
}

/// `s3://BUCKET/PREFIX?KEY=VALUE&…`.
#[derive(Debug)]
pub(crate) struct S3Location {
    /// The bucket.
    pub(crate) bucket: String,
    /// Where the store's root is inside the bucket ([`ObjectPath::ROOT`] for the whole bucket).
    pub(crate) prefix: ObjectPath,
    /// The query's settings, in order (they override the `AWS_*` environment).
    pub(crate) options: Vec<(AmazonS3ConfigKey, String)>,
    /// The `endpoint` setting, if the query has one (for [`describe`](Self::describe)).
    endpoint: Option<String>,
}

impl S3Location {
    /// `s3://bucket/prefix`, with the endpoint when the query names one; never the query
    /// itself, which may hold credentials.
    pub(crate) fn describe(&self) -> String {
        let mut url = format!("s3://{}", self.bucket);
        if !self.prefix.as_ref().is_empty() {
            url = format!("{url}/{}", self.prefix);
        }
        match &self.endpoint {
            Some(endpoint) => format!("{url} (endpoint {endpoint})"),
            None => url,
        }
    }
}

/// Parses a plain path, a `file://` URL or an `s3://` (also `s3a://`) URL.
pub(crate) fn parse(location: &str) -> Result<Location, OpenError> {
    if location.is_empty() {
        return Err(OpenError::Empty);
    }
    match scheme(location) {
        None => Ok(Location::Local(PathBuf::from(location))),
        Some("file") => parse_file_url(location),
        Some("s3" | "s3a") => parse_s3_url(location).map(Location::S3),
        Some(other) => Err(OpenError::UnsupportedScheme {
            location: without_query(location),
            scheme: other.to_string(),
        }),
    }
}

/// The URL scheme of `location`, or `None` when it is a plain path (a path such as
/// `out/a://b` has no scheme: `out/a` is not one).
fn scheme(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

fn parse_file_url(location: &str) -> Result<Location, OpenError> {
    let url = parse_url(location)?;
    url.to_file_path()
        .map(Location::Local)
        .map_err(|()| OpenError::NotALocalPath {
            location: without_query(location),
        })
}

fn parse_s3_url(location: &str) -> Result<S3Location, OpenError> {
    let url = parse_url(location)?;
    let shown = without_query(location);
    let bucket = match url.host_str() {
        Some(bucket) if !bucket.is_empty() => bucket.to_string(),
        _ => return Err(OpenError::MissingBucket { location: shown }),
    };
    let prefix =
        ObjectPath::from_url_path(url.path()).map_err(|source| OpenError::InvalidPrefix {
            location: shown.clone(),
            source,
        })?;
    let mut options = Vec::new();
    let mut endpoint = None;
    for (key, value) in url.query_pairs() {
        let config_key =
            AmazonS3ConfigKey::from_str(&key).map_err(|_| OpenError::UnknownOption {
                location: shown.clone(),
                key: key.to_string(),
            })?;
        if config_key == AmazonS3ConfigKey::Endpoint {
            endpoint = Some(value.to_string());
        }
        options.push((config_key, value.into_owned()));
    }
    Ok(S3Location {
        bucket,
        prefix,
        options,
        endpoint,
    })
}

fn parse_url(location: &str) -> Result<Url, OpenError> {
    Url::parse(location).map_err(|source| OpenError::InvalidUrl {
        location: without_query(location),
        source,
    })
}

/// The location up to its `?`: what errors and descriptions may show.
fn without_query(location: &str) -> String {
    location
        .split_once('?')
        .map_or(location, |(before, _)| before)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(location: &str) -> S3Location {
        match parse(location).unwrap() {
            Location::S3(s3) => s3,
            Location::Local(dir) => panic!("{location} parsed as the directory {dir:?}"),
        }
    }

    fn local(location: &str) -> PathBuf {
        match parse(location).unwrap() {
            Location::Local(dir) => dir,
            Location::S3(s3) => panic!("{location} parsed as {s3:?}"),
        }
    }

    #[test]
    fn plain_paths_and_file_urls_are_local_directories() {
        assert_eq!(local("ckpt"), PathBuf::from("ckpt"));
        assert_eq!(local("./out/ckpt"), PathBuf::from("./out/ckpt"));
        assert_eq!(local("/var/lib/ckpt"), PathBuf::from("/var/lib/ckpt"));
        assert_eq!(local("out/a://b"), PathBuf::from("out/a://b"));
        assert_eq!(
            local("file:///var/lib/ck%20pt"),
            PathBuf::from("/var/lib/ck pt")
        );
    }

    #[test]
    fn s3_url_gives_bucket_prefix_and_options_in_order() {
        let s3 = s3("s3://ckpt/jobs/standard?endpoint=http://127.0.0.1:5000\
                     &region=us-east-1&allow_http=true");
        assert_eq!(s3.bucket, "ckpt");
        assert_eq!(s3.prefix.as_ref(), "jobs/standard");
        let keys: Vec<_> = s3.options.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            keys,
            vec![
                (AmazonS3ConfigKey::Endpoint, "http://127.0.0.1:5000"),
                (AmazonS3ConfigKey::Region, "us-east-1"),
                (
                    AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                    "true"
                ),
            ]
        );
        assert_eq!(
            s3.describe(),
            "s3://ckpt/jobs/standard (endpoint http://127.0.0.1:5000)"
        );
    }

    #[test]
    fn s3_url_without_prefix_is_the_whole_bucket_and_secrets_stay_out_of_describe() {
        let s3 = s3("s3a://ckpt/?access_key_id=AKIA&secret_access_key=s3cr3t");
        assert_eq!(s3.prefix.as_ref(), "");
        assert_eq!(s3.options.len(), 2);
        assert_eq!(s3.describe(), "s3://ckpt");
    }

    #[test]
    fn bad_locations_say_what_is_wrong() {
        assert!(matches!(parse(""), Err(OpenError::Empty)));
        let err = parse("gs://bucket/x?token=secret").unwrap_err();
        assert!(
            matches!(&err, OpenError::UnsupportedScheme { scheme, location }
                if scheme == "gs" && location == "gs://bucket/x"),
            "{err:?}"
        );
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = parse("s3:///prefix").unwrap_err();
        assert!(matches!(err, OpenError::MissingBucket { .. }), "{err:?}");
        let err = parse("s3://b/a//c").unwrap_err();
        assert!(matches!(err, OpenError::InvalidPrefix { .. }), "{err:?}");
        let err = parse("s3://b/p?colour=blue").unwrap_err();
        assert!(
            matches!(&err, OpenError::UnknownOption { key, .. } if key == "colour"),
            "{err:?}"
        );
        let err = parse("file://host/dir").unwrap_err();
        assert!(matches!(err, OpenError::NotALocalPath { .. }), "{err:?}");
    }
}
