//! Unit tests of the store: faults the OS cannot produce on demand, injected
//! through the storage seam.

use super::*;
use crate::bet::{Bet, BetBatch, Date};
use crate::storage::fault::{self, FaultPlan};
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

fn bets(agency: AgencyId, from: u64, n: u64) -> BetBatch {
    let bets: Vec<Bet> = (from..from + n)
        .map(|i| Bet {
            first_name: format!("Name{agency}"),
            last_name: "Pérez, Jr".into(),
            document: format!("{}", agency as u64 * 1_000_000 + i),
            birthdate: Date::new(1990, 1, 1).unwrap(),
            number: (i % 10_000) as u16,
        })
        .collect();
    bets.into()
}

fn store_with_faults(path: &Path) -> (Addr<BetStore>, Arc<FaultPlan>) {
    let plan = Arc::new(FaultPlan::default());
    let store = BetStore::open_with(path.to_path_buf(), true, fault::wrap(plan.clone()), crate::logging::discard())
        .unwrap()
        .start();
    (store, plan)
}

/// Every stored row, checked whole, as `(agency, document)`.
fn rows(path: &Path) -> Vec<(AgencyId, String)> {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "torn tail");
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&bytes[..]);
    reader
        .records()
        .map(|r| {
            let r = r.expect("every row whole, 6 fields");
            assert_eq!(r.len(), 6);
            (r[0].parse().unwrap(), r[3].to_string())
        })
        .collect()
}

fn expected(agency: AgencyId, n: u64) -> Vec<(AgencyId, String)> {
    (0..n).map(|i| (agency, format!("{}", agency as u64 * 1_000_000 + i))).collect()
}

fn send(store: &Addr<BetStore>, agency: AgencyId, from: u64, n: u64) -> Request<BetStore, StoreBets> {
    store.send(StoreBets { agency, first_index: Some(from), bets: bets(agency, from, n), writer: None })
}

#[actix::test]
async fn a_failed_fdatasync_acks_nothing_parked_and_reopens_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let (store, plan) = store_with_faults(&path);
    assert_eq!(send(&store, 1, 0, 3).await.unwrap().unwrap().newly_stored, 3);

    // One burst: a new batch, a retry of it (written, not yet synced) and another
    // agency's batch, all parked behind the sync that fails.
    plan.fail_sync.store(true, Ordering::SeqCst);
    let (b, retry, c) = (send(&store, 1, 3, 2), send(&store, 1, 3, 2), send(&store, 2, 0, 4));
    let (b, retry, c) = (b.await.unwrap(), retry.await.unwrap(), c.await.unwrap());
    for answer in [b, retry, c] {
        match answer {
            Err(StoreError::Storage { path: p, .. }) => assert_eq!(p, path),
            other => panic!("acked after a failed sync: {other:?}"),
        }
    }
    // The reopened state is what was synced: the unsynced rows are gone.
    assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((3, false)));
    assert_eq!(store.send(QueryProgress { agency: 2 }).await.unwrap(), Ok((0, false)));
    assert_eq!(rows(&path), expected(1, 3));

    // The agencies resend from there: each row once.
    send(&store, 1, 3, 2).await.unwrap().unwrap();
    send(&store, 2, 0, 4).await.unwrap().unwrap();
    assert_eq!(store.send(MarkDone { agency: 1, total: 5, writer: None }).await.unwrap(), Ok(5));
    let mut want = expected(1, 3);
    want.extend(expected(1, 5).split_off(3));
    want.extend(expected(2, 4));
    assert_eq!(rows(&path), want);
    store.send(CloseStore).await.unwrap().unwrap();
    let again = BetStore::open(path.clone(), true, crate::logging::discard()).unwrap().start();
    assert_eq!(again.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((5, true)));
    assert_eq!(again.send(QueryProgress { agency: 2 }).await.unwrap(), Ok((4, false)));
}

#[actix::test]
async fn a_short_write_leaves_no_torn_row_for_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let (store, plan) = store_with_faults(&path);
    send(&store, 1, 0, 2).await.unwrap().unwrap();
    // The next write stores 1.5 rows' worth of bytes, then fails like ENOSPC.
    plan.short_write_next(70);
    match send(&store, 2, 0, 3).await.unwrap() {
        Err(StoreError::Storage { kind, path: p, message }) => {
            assert_eq!(kind, io::ErrorKind::StorageFull);
            assert_eq!(p, path);
            assert!(message.contains("No space left"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rows(&path), expected(1, 2), "the partial batch was cut back");
    // The next appends start on a row boundary; the refused batch goes in whole.
    send(&store, 1, 2, 1).await.unwrap().unwrap();
    send(&store, 2, 0, 3).await.unwrap().unwrap();
    let mut want = expected(1, 3);
    want.extend(expected(2, 3));
    assert_eq!(rows(&path), want);
    drop(store);
    let reopened = BetStore::open(path.clone(), true, crate::logging::discard()).unwrap().start();
    assert_eq!(reopened.send(QueryProgress { agency: 2 }).await.unwrap(), Ok((3, false)));
}

#[actix::test]
async fn a_short_write_that_cannot_be_rolled_back_stops_writes_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let (store, plan) = store_with_faults(&path);
    send(&store, 1, 0, 2).await.unwrap().unwrap();
    plan.short_write_next(30);
    plan.fail_set_len.store(true, Ordering::SeqCst);
    assert!(send(&store, 1, 2, 2).await.unwrap().is_err());
    // The torn row is still on disk, but the next request reopens first, which cuts it.
    send(&store, 1, 2, 2).await.unwrap().unwrap();
    assert_eq!(rows(&path), expected(1, 4));
}

#[actix::test]
async fn a_failed_sync_before_done_records_no_done() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let (store, plan) = store_with_faults(&path);
    // Relaxed by nothing: the batch waits for its sync, which fails.
    plan.fail_sync.store(true, Ordering::SeqCst);
    assert!(send(&store, 1, 0, 2).await.unwrap().is_err());
    // Done for rows that are not there is refused, and nothing says done.
    assert!(matches!(
        store.send(MarkDone { agency: 1, total: 2, writer: None }).await.unwrap(),
        Err(StoreError::Incomplete { stored: 0, total: 2 })
    ));
    assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((0, false)));
    assert_eq!(store.send(DoneAgencies).await.unwrap(), Vec::<AgencyId>::new());
    assert!(rows(&path).is_empty());
}

#[actix::test]
async fn a_failed_journal_sync_records_no_done_and_tells_nobody() {
    use crate::actors::draw_coordinator::{DrawCoordinator, QueryStatus};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let (store, plan) = store_with_faults(&path);
    let coordinator = DrawCoordinator::new(2, 7574, vec![], store.clone(), crate::logging::discard()).start();
    store.send(NotifyDone(coordinator.clone().recipient())).await.unwrap();
    send(&store, 1, 0, 3).await.unwrap().unwrap();
    // The bets are synced already: the only sync Done needs is the journal's, and it fails.
    plan.fail_sync.store(true, Ordering::SeqCst);
    assert!(matches!(
        store.send(MarkDone { agency: 1, total: 3, writer: None }).await.unwrap(),
        Err(StoreError::Storage { path: p, .. }) if p.ends_with("bets.csv.done")
    ));
    assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((3, false)));
    assert!(coordinator.send(QueryStatus).await.unwrap().done.is_empty(), "coordinator told of an unrecorded Done");
    assert_eq!(std::fs::read_to_string(DoneJournal::path_for(&path)).unwrap(), "", "journal line cut");
    // Sent again, Done is recorded, and the store tells the coordinator.
    assert_eq!(store.send(MarkDone { agency: 1, total: 3, writer: None }).await.unwrap(), Ok(3));
    assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((3, true)));
    assert_eq!(coordinator.send(QueryStatus).await.unwrap().done, vec![1]);
    assert_eq!(rows(&path), expected(1, 3));
}

#[actix::test]
async fn rows_parked_before_a_torn_unrecoverable_write_are_never_acked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let (store, plan) = store_with_faults(&path);
    send(&store, 1, 0, 2).await.unwrap().unwrap();
    // One burst: two batches wait in the write buffer, parked; the write that
    // carries them tears and cannot be cut back, so the store reopens from the
    // last sync and neither is acked.
    plan.short_write_next(30);
    plan.fail_set_len.store(true, Ordering::SeqCst);
    let (parked, torn) = (send(&store, 1, 2, 2), send(&store, 2, 0, 2));
    assert!(parked.await.unwrap().is_err(), "acked rows the reopen cut away");
    assert!(torn.await.unwrap().is_err());
    send(&store, 3, 0, 1).await.unwrap().unwrap();
    assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((2, false)));
    let mut want = expected(1, 2);
    want.extend(expected(3, 1));
    assert_eq!(rows(&path), want);
}

#[actix::test]
async fn a_failed_chunk_write_takes_back_only_its_own_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let (store, plan) = store_with_faults(&path);
    // Batches big enough that one of them fills the write buffer: the write
    // that fails carries earlier batches' rows too, and only the batch that
    // triggered it is refused; the earlier ones are written at the sync.
    let per_batch = 200;
    let full = (storage::WRITE_CHUNK as u64 / (per_batch * 40)) + 2;
    plan.short_write_next(100);
    let sends: Vec<_> = (0..full).map(|i| send(&store, 1, i * per_batch, per_batch)).collect();
    let mut refused = None;
    let mut acked = 0u64;
    for (i, s) in sends.into_iter().enumerate() {
        match s.await.unwrap() {
            Ok(stored) if refused.is_none() => acked += u64::from(stored.count),
            Ok(_) => panic!("batch {i} after the refused one was stored out of order"),
            Err(StoreError::Storage { kind, .. }) if refused.is_none() => {
                assert_eq!(kind, io::ErrorKind::StorageFull);
                refused = Some(i as u64);
            }
            Err(e) => assert!(refused.is_some(), "batch {i}: {e}"),
        }
    }
    let refused = refused.expect("one batch filled the buffer and its write failed");
    assert_eq!(acked, refused * per_batch);
    assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((acked, false)));
    assert_eq!(rows(&path), expected(1, acked), "every acked row once, nothing torn");
}

/// A failed write or sync of the sidecar (after the bets' own sync went through)
/// acks nothing parked, and the reopen cuts both files back to the last whole
/// group: the store passes its open-time checks, with each row once.
#[actix::test]
async fn a_failed_sidecar_write_or_sync_cuts_both_files_to_the_last_group() {
    for fault in ["short sidecar write", "failed sidecar sync"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bets.csv");
        let (store, plan) = store_with_faults(&path);
        send(&store, 1, 0, 3).await.unwrap().unwrap();
        let sidecar = storage::integrity::sidecar_path(&path);
        let sealed = std::fs::metadata(&sidecar).unwrap().len();
        match fault {
            // The sync's writes: the rows, then the group's record.
            "short sidecar write" => plan.short_write_after(1, 10),
            _ => {
                plan.fail_sync_skip.store(1, Ordering::SeqCst);
                plan.fail_sync.store(true, Ordering::SeqCst);
            }
        }
        assert!(send(&store, 1, 3, 2).await.unwrap().is_err(), "{fault}: acked");
        assert_eq!(store.send(QueryProgress { agency: 1 }).await.unwrap(), Ok((3, false)), "{fault}");
        assert_eq!(std::fs::metadata(&sidecar).unwrap().len(), sealed, "{fault}");
        assert_eq!(rows(&path), expected(1, 3), "{fault}");
        send(&store, 1, 3, 2).await.unwrap().unwrap();
        assert_eq!(store.send(MarkDone { agency: 1, total: 5, writer: None }).await.unwrap(), Ok(5));
        drop(store);
        let (_, rec) = BetFile::open(&path).unwrap();
        assert_eq!((rec.per_agency.get(&1), rec.groups, rec.repaired_bytes), (Some(&5), 2, 0), "{fault}");
    }
}
