//! Where envelopes go: NATS when a URL is configured, otherwise nowhere (counted and dropped, so
//! the gateway can run and be measured without a broker).

use bytes::Bytes;

/// A failure to reach or use NATS.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The connection to NATS could not be made.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The NATS URL.
        url: String,
        /// The client's error.
        source: async_nats::ConnectError,
    },
    /// A publish was refused.
    #[error("publishing to NATS failed: {0}")]
    Publish(#[from] async_nats::PublishError),
}

/// The envelope sink shared by every shard of the process.
#[derive(Clone, Debug)]
pub enum Publisher {
    /// Publish to this NATS client.
    Nats(async_nats::Client),
    /// No NATS URL: envelopes are counted by the caller and dropped.
    Discard,
}

impl Publisher {
    /// Connects to `url`, or discards when there is none.
    pub async fn connect(url: Option<&str>) -> Result<Publisher, PublishError> {
        let Some(url) = url else {
            return Ok(Publisher::Discard);
        };
        let client = async_nats::ConnectOptions::new()
            .name("arrakis-gateway")
            // The default (2,048) lets a burst of GUILD_CREATEs stall the shards.
            .client_capacity(65_536)
            .connect(url)
            .await
            .map_err(|source| PublishError::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(Publisher::Nats(client))
    }

    /// Publishes one envelope; returns whether it went anywhere.
    pub async fn publish(
        &self,
        subject: async_nats::Subject,
        envelope: Bytes,
    ) -> Result<bool, PublishError> {
        match self {
            Publisher::Nats(client) => {
                client.publish(subject, envelope).await?;
                Ok(true)
            }
            Publisher::Discard => Ok(false),
        }
    }

    /// Waits until everything published so far has been written to the server.
    pub async fn flush(&self) {
        if let Publisher::Nats(client) = self {
            if let Err(e) = client.flush().await {
                tracing::warn!(error = %e, "flushing NATS failed");
            }
        }
    }
}
