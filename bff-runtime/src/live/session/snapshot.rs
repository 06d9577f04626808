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
use crate::projection::Row;
use crate::store::{Frozen, Scan};

/// Most rows one snapshot message holds. A page's rows are held decoded while it
/// is encoded (a few KB each with their maps), which is what a paging connection
/// holds; small pages also bring the first rows to the screen sooner.
pub const SNAPSHOT_PAGE: usize = 1_000;

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
            .visible_rows(&view, selector, None, SNAPSHOT_PAGE + 1)
            .map_err(store_failed)?;
        // A filter that finds too little of what it reads is refused at once; on
        // later pages a spent budget only makes a short page.
        if scan.budget_spent {
            return Err(SubscribeError::ScanTooLong);
        }
        let (seen_through, position) = self.reflected(&view)?;
        let (rows, next) = page_of(scan);
        let page = Update::Snapshot {
            position: position.clone(),
            rows,
            more: next.is_some(),
        };
        let paging = next.map(|after| Paging {
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
                let scan =
                    hub.visible_rows(&view, &selector, Some(&paging.after), SNAPSHOT_PAGE + 1);
                (scan, view.freeze())
            })
            .await;
        let (rows, next) = page_of(scan.map_err(store_failed)?);
        let page = Update::Snapshot {
            position: sub.position.clone(),
            rows,
            more: next.is_some(),
        };
        if let Some(after) = next {
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

/// A page from a scan for one row more than a page: its rows, and the key the next
/// page starts after, if there is one (so the last page is never an empty one).
fn page_of(mut scan: Scan) -> (Vec<(String, Row)>, Option<String>) {
    if scan.rows.len() > SNAPSHOT_PAGE {
        scan.rows.truncate(SNAPSHOT_PAGE);
        let after = scan.rows.last().map(|(key, _)| key.clone());
        return (scan.rows, after);
    }
    // Fewer rows and still a place to go on from: the scan's budget ran out.
    (scan.rows, scan.resume_after)
}
