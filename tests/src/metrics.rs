//! Prometheus text scraped from a node's `/metrics`, parsed for assertions.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parses one `name{label="value",...} value` line (labels optional).
pub fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let (series, value) = line
        .rsplit_once(' ')
        .ok_or_else(|| anyhow!("no value in {line:?}"))?;
    let value: f64 = value
        .parse()
        .with_context(|| format!("value of {line:?} is not a number"))?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let body = rest
                .strip_suffix('}')
                .ok_or_else(|| anyhow!("unclosed labels in {line:?}"))?;
            let mut labels = BTreeMap::new();
            for pair in body.split(',').filter(|p| !p.is_empty()) {
                let (key, quoted) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow!("label without = in {line:?}"))?;
                let value = quoted
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .ok_or_else(|| anyhow!("unquoted label value in {line:?}"))?;
                labels.insert(key.to_string(), value.to_string());
            }
            (name, labels)
        }
        None => (series, BTreeMap::new()),
    };
    let valid_name = name.chars().enumerate().all(|(i, c)| {
        c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !valid_name {
        bail!("invalid metric name in {line:?}");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// GET /metrics: the content type and every sample (every non-comment line must parse).
pub async fn scrape(port: u16) -> anyhow::Result<(String, Vec<Sample>)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: keel\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in {answer:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("scrape answered {head}");
    }
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_string();
    let samples = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse_sample)
        .collect::<anyhow::Result<_>>()?;
    Ok((content_type, samples))
}

/// The sum of the samples named `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_parser_takes_labels_and_refuses_what_is_not_a_sample() -> anyhow::Result<()> {
        let sample = parse_sample(r#"service_requests{operation="Start",status_code="OK"} 3"#)?;
        assert_eq!(sample.name, "service_requests");
        assert_eq!(
            sample.labels.get("status_code").map(String::as_str),
            Some("OK")
        );
        assert_eq!(sample.value, 3.0);
        assert_eq!(parse_sample("keel_storage_fsyncs_total 1.5")?.value, 1.5);
        assert!(parse_sample("no_value").is_err());
        assert!(parse_sample(r#"x{a=b} 1"#).is_err());
        assert!(parse_sample("9bad 1").is_err());
        Ok(())
    }
}
