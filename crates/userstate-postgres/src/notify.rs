//! Following other processes' commits: LISTEN/NOTIFY on a dedicated connection (reconnected
//! with backoff when it drops), plus a slow poll of the head as a safety net for lost
//! notifications. Both only ever move the head watch forward.

use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::future::poll_fn;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tracing::{debug, warn};

use userstate::store::Watermark;

use crate::sql::HEAD_POSITION;

/// Listens on `channel` until the runtime (or the owning store) stops it.
pub(crate) async fn listen(config: tokio_postgres::Config, channel: String, head: Arc<Watermark>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match listen_once(&config, &channel, &head).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                warn!(error = %e, "LISTEN connection failed; reconnecting");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// One listening session: returns when the connection ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    head: &Watermark,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut notifications) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    debug!(error = %e, "LISTEN connection ended");
                    return;
                }
                None => return,
            }
        }
    });
    let session = async {
        // The channel name is built from a validated schema name.
        client
            .batch_execute(&format!("LISTEN \"{channel}\""))
            .await?;
        // Commits between the drop of an earlier session and this LISTEN sent no notification
        // to us: catch up once.
        let row = client.query_one(HEAD_POSITION, &[]).await?;
        head.advance(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0));
        debug!(channel, "listening for commits");
        while let Some(payload) = notifications.recv().await {
            match payload.parse::<u64>() {
                Ok(position) => {
                    head.advance(position);
                }
                Err(_) => warn!(payload, "ignored a notification that is not a position"),
            }
        }
        Ok(())
    };
    let result = session.await;
    driver.abort();
    result
}

/// Polls the head every `interval` through the pool, forever.
pub(crate) async fn poll(pool: Pool, interval: Duration, head: Arc<Watermark>) {
    loop {
        tokio::time::sleep(interval).await;
        let read = async {
            let client = pool.get().await.ok()?;
            let row = client.query_one(HEAD_POSITION, &[]).await.ok()?;
            u64::try_from(row.try_get::<_, i64>(0).ok()?).ok()
        };
        match tokio::time::timeout(interval.max(Duration::from_secs(1)), read).await {
            Ok(Some(position)) => {
                head.advance(position);
            }
            _ => debug!("head poll failed; will try again"),
        }
    }
}
