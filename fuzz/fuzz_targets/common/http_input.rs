//! The input shape of the HTTP fuzz targets: `name: value` header lines, a blank line, then the
//! body (no blank line: no body). Lines that are not a valid header are skipped.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

pub fn headers_and_body(input: &[u8]) -> (HeaderMap, Bytes) {
    let split = input.windows(2).position(|w| w == b"\n\n").unwrap_or(input.len());
    let (head, body) = input.split_at(split);
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = line.split_at(colon);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value[1..].trim_ascii()))
        {
            headers.append(name, value);
        }
    }
    (headers, Bytes::copy_from_slice(body.get(2..).unwrap_or_default()))
}
