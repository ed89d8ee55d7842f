//! The publisher: makes each synced batch visible to readers (index, head watch), then answers
//! its callers, in the order the syncer wrote them (see the parent module).

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use super::*; // the queue, its batches and helpers (`writer.rs`)
use crate::store::file::Shared;
use crate::store::StoreError;

/// The publisher's loop: makes each synced batch visible to readers, then answers its
/// callers, in the order the syncer wrote them. Ends when the syncer has stopped.
pub fn publish(shared: Arc<Shared>, synced: Receiver<Synced>) {
    for batch in synced {
        publish_one(&shared, batch);
        shared.publishing.fetch_sub(1, Ordering::Release);
    }
}

/// Makes one synced batch visible (index, head watch), then answers its callers.
pub(super) fn publish_one(shared: &Shared, Synced { batch, outcome }: Synced) {
    let placed = match outcome {
        Ok(placed) => placed,
        Err(why) => {
            for (reply, _) in batch.appends {
                let error = StoreError::Io(std::io::Error::other(why.clone()));
                let _ = reply.send(Err(error));
            }
            return;
        }
    };
    let mut index = shared.write_index();
    if let Some(segment) = placed.new_segment {
        index.add_segment(segment);
    }
    for (event, &rel) in batch.events().zip(&batch.offsets) {
        // `Syncer::write` checked that every offset of the batch fits in 32 bits.
        let offset = u32::try_from(placed.base + rel as u64).unwrap_or(u32::MAX);
        index.push(event.stream.as_str(), offset);
    }
    index.set_last_len(placed.len);
    let head = index.head();
    drop(index);
    shared.head.advance(head);
    {
        let mut queue = shared.lock_queue();
        for (_, events) in &batch.appends {
            let Some(last) = events.last() else { continue };
            if queue.unpublished.get(&last.stream) == Some(&last.sequence) {
                queue.unpublished.remove(&last.stream);
            }
        }
    }
    for (reply, events) in batch.appends {
        let _ = reply.send(Ok(events));
    }
}
