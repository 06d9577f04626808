//! Snapshots of any size. One that fits [`SNAPSHOT_PAGE`] rows is one message; a
//! larger one goes in pages, every page read at the same frozen commit, the next
//! only when the transport asks for more (it drains again once it has sent the
//! last), so a connection holds one page at a time however large the snapshot.
//! After the last page the subscription catches up from the snapshot's position
//! through the change log, then goes live: changes committed while it paged are
//! sent once, after the rows they change.

use std::sync::Arc;

use super::{store_failed, Read, Sub, SubscribeError, Update};
use crate::live::selector::Selector;
use crate::live::Hub;
use crate::store::Frozen;

/// Most rows one snapshot message holds.
pub const SNAPSHOT_PAGE: usize = 10_000;

/// A snapshot with pages still to send.
pub(super) struct Paging {
    /// The read every page is taken from.
    frozen: Frozen,
    /// The last key sent.
    after: String,
}

impl Hub {
    /// The first page of `sub`'s snapshot (the whole of it when it fits one); the
    /// rest come from [`Hub::next_page`].
    pub(super) async fn snapshot(
        self: &Arc<Self>,
        sub: &mut Sub,
    ) -> Result<Update, SubscribeError> {
        let selector = sub.selector.clone();
        let (read, paging) = self
            .off_the_workers(move |hub| hub.read_first_page(&selector))
            .await?;
        sub.paging = paging;
        Ok(sub.settle(read).remove(0))
    }

    fn read_first_page(
        &self,
        selector: &Selector,
    ) -> Result<(Read, Option<Paging>), SubscribeError> {
        let view = self.store.view().map_err(store_failed)?;
        let scan = self
            .visible_rows(&view, selector, None, SNAPSHOT_PAGE)
            .map_err(store_failed)?;
        // A filter that finds too little of what it reads is refused at once; on
        // later pages a spent budget only makes a short page.
        if scan.budget_spent {
            return Err(SubscribeError::ScanTooLong);
        }
        let (seen_through, position) = self.reflected(&view)?;
        let page = Update::Snapshot {
            position: position.clone(),
            rows: scan.rows,
            more: scan.resume_after.is_some(),
        };
        let paging = scan.resume_after.map(|after| Paging {
            frozen: view.freeze(),
            after,
        });
        let read = Read {
            updates: vec![page],
            seen_through,
            position,
        };
        Ok((read, paging))
    }

    /// The next page of `sub`'s snapshot, if it is paging; after the last, what
    /// changed since the snapshot's position (or a reset and a fresh snapshot).
    pub(super) async fn next_page(
        self: &Arc<Self>,
        sub: &mut Sub,
    ) -> Result<Vec<Update>, SubscribeError> {
        let Some(paging) = sub.paging.take() else {
            return Ok(Vec::new());
        };
        let selector = sub.selector.clone();
        let (scan, frozen) = self
            .off_the_workers(move |hub| {
                let view = hub.store.thaw(paging.frozen);
                let scan = hub.visible_rows(&view, &selector, Some(&paging.after), SNAPSHOT_PAGE);
                (scan, view.freeze())
            })
            .await;
        let scan = scan.map_err(store_failed)?;
        let page = Update::Snapshot {
            position: sub.position.clone(),
            rows: scan.rows,
            more: scan.resume_after.is_some(),
        };
        if let Some(after) = scan.resume_after {
            sub.paging = Some(Paging { frozen, after });
            return Ok(vec![page]);
        }
        drop(frozen);
        let since = self
            .store
            .codec()
            .decode(&sub.position)
            .map_err(|e| SubscribeError::Failed(crate::live::Close::internal(e)))?;
        let mut updates = vec![page];
        updates.extend(self.resume(sub, &since, None).await?);
        Ok(updates)
    }
}
