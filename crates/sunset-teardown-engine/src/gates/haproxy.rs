//! haproxy's runtime API (`stats socket ... level admin`): one connection per request, over a
//! Unix socket or TCP, each request audited. Weights are read with `get weight` and set for both
//! servers in one request (`;`-separated), so a stage is one change in the audit log.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Error;
use crate::audit::AuditLog;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The legacy and the new server of one backend.
pub(crate) struct Pair<'a> {
    pub(crate) audit: &'a AuditLog,
    pub(crate) api: &'a str,
    pub(crate) backend: &'a str,
    pub(crate) legacy: &'a str,
    pub(crate) new: &'a str,
}

/// The weights of the two servers as haproxy has them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Weights {
    pub(crate) legacy: u32,
    pub(crate) new: u32,
}

impl Weights {
    /// `share` percent of the traffic to the new server.
    pub(crate) fn for_share(share: u32) -> Weights {
        Weights {
            legacy: 100 - share.min(100),
            new: share.min(100),
        }
    }

    /// The new server's share in percent.
    pub(crate) fn share(self) -> u32 {
        (self.new * 100)
            .checked_div(self.legacy + self.new)
            .unwrap_or(0)
    }
}

impl Pair<'_> {
    pub(crate) async fn weights(&self) -> Result<Weights, Error> {
        let get = |server: &str| format!("get weight {}/{server}", self.backend);
        let answer = self
            .request(&format!("{}; {}", get(self.legacy), get(self.new)), false)
            .await?;
        // One line per command: `CURRENT (initial INITIAL)`.
        let values: Vec<u32> = answer
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                line.split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| self.refused(&answer))
            })
            .collect::<Result<_, _>>()?;
        match values.as_slice() {
            [legacy, new] => Ok(Weights {
                legacy: *legacy,
                new: *new,
            }),
            _ => Err(self.refused(&answer)),
        }
    }

    pub(crate) async fn set(&self, weights: Weights) -> Result<(), Error> {
        let set =
            |server: &str, weight: u32| format!("set weight {}/{server} {weight}", self.backend);
        let answer = self
            .request(
                &format!(
                    "{}; {}",
                    set(self.new, weights.new),
                    set(self.legacy, weights.legacy)
                ),
                true,
            )
            .await?;
        // Success is silence; anything else is haproxy's reason.
        if answer.trim().is_empty() {
            Ok(())
        } else {
            Err(self.refused(&answer))
        }
    }

    fn refused(&self, answer: &str) -> Error {
        Error::Probe(format!(
            "haproxy at {} answered `{}` for backend `{}`, servers `{}` and `{}`",
            self.api,
            answer.trim(),
            self.backend,
            self.legacy,
            self.new
        ))
    }

    async fn request(&self, command: &str, mutating: bool) -> Result<String, Error> {
        let answer = tokio::time::timeout(TIMEOUT, self.send(command)).await;
        let outcome = match answer {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(error)) => Err(format!("haproxy at {}: {error}", self.api)),
            Err(_) => Err(format!(
                "haproxy at {} did not answer within {}",
                self.api,
                sunset_plan::format_duration(TIMEOUT)
            )),
        };
        match outcome {
            Ok(text) => {
                self.audit
                    .record("haproxy", command, mutating, &[], Ok(()))?;
                Ok(text)
            }
            Err(message) => {
                self.audit
                    .record("haproxy", command, mutating, &[], Err(&message))?;
                Err(Error::Probe(message))
            }
        }
    }

    async fn send(&self, command: &str) -> std::io::Result<String> {
        let line = format!("{command}\n");
        let mut answer = String::new();
        if self.api.contains('/') {
            let mut stream = tokio::net::UnixStream::connect(self.api).await?;
            stream.write_all(line.as_bytes()).await?;
            stream.read_to_string(&mut answer).await?;
        } else {
            let mut stream = tokio::net::TcpStream::connect(self.api).await?;
            stream.write_all(line.as_bytes()).await?;
            stream.read_to_string(&mut answer).await?;
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_weights_out_of_a_hundred() {
        assert_eq!(
            Weights::for_share(25),
            Weights {
                legacy: 75,
                new: 25
            }
        );
        assert_eq!(Weights::for_share(100).share(), 100);
        assert_eq!(Weights { legacy: 0, new: 0 }.share(), 0);
        assert_eq!(Weights { legacy: 1, new: 1 }.share(), 50);
    }
}
