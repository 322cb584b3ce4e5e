//! A waiter's wakeup channel, the same for both back ends: a `watch` of the
//! channel's head that a publish (or a notification) bumps.

use tokio::sync::watch;

use super::message::Timestamp;

/// Unregisters a waiter (drops its receiver) and calls `release` when it was
/// the channel's last one, so an unused channel can be freed.
pub(super) fn leave(
    rx: &mut Option<watch::Receiver<Timestamp>>,
    wake: &watch::Sender<Timestamp>,
    release: impl FnOnce(),
) {
    *rx = None;
    if wake.receiver_count() == 0 {
        release();
    }
}

/// Waits for the next change of a waiter's wakeup channel. The sender lives
/// in the slot the waiter holds, so it cannot close while we wait; `None`
/// (a subscription being dropped) waits forever.
pub(super) async fn changed(rx: &mut Option<watch::Receiver<Timestamp>>) {
    let open = match rx.as_mut() {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !open {
        std::future::pending::<()>().await;
    }
}
