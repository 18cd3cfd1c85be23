//! Watches the plugins directory and turns bursts of file events into one reload event per
//! quiet period. The watcher only sends on a channel; the reload itself lives in the host, so
//! it can be driven (and tested) without a filesystem.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Files under the directory that changed (created, written, removed, renamed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadEvent {
    pub files: Vec<String>,
}

/// Pure debounce logic: files collect until nothing has happened for `quiet`.
#[derive(Debug)]
pub struct Debouncer {
    quiet: Duration,
    pending: BTreeSet<String>,
    last: Option<Instant>,
}

impl Debouncer {
    pub fn new(quiet: Duration) -> Self {
        Debouncer {
            quiet,
            pending: BTreeSet::new(),
            last: None,
        }
    }

    pub fn push(&mut self, file: String, now: Instant) {
        self.pending.insert(file);
        self.last = Some(now);
    }

    /// When the pending batch becomes due, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.last.map(|l| l + self.quiet)
    }

    /// The batch, if the quiet period has passed.
    pub fn take_due(&mut self, now: Instant) -> Option<ReloadEvent> {
        match self.deadline() {
            Some(d) if now >= d && !self.pending.is_empty() => {
                self.last = None;
                Some(ReloadEvent {
                    files: std::mem::take(&mut self.pending).into_iter().collect(),
                })
            }
            _ => None,
        }
    }
}

/// A running watcher; dropping it stops the notifications.
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Watch `dir` (non-recursively) and send a debounced [`ReloadEvent`] for changes to `.wasm`
/// files. Must be called inside a tokio runtime.
pub fn watch(
    dir: &Path,
    quiet: Duration,
) -> notify::Result<(DirWatcher, mpsc::UnboundedReceiver<ReloadEvent>)> {
    use notify::Watcher;
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            // Access events (reads, including our own) would reload in a loop; skip them.
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            for p in ev.paths {
                let _ = raw_tx.send(p);
            }
        }
    })?;
    watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut deb = Debouncer::new(quiet);
        loop {
            let next = match deb.deadline() {
                Some(d) => tokio::time::timeout_at(d.into(), raw_rx.recv()).await,
                None => Ok(raw_rx.recv().await),
            };
            match next {
                Ok(Some(path)) => {
                    let is_wasm = path.extension().is_some_and(|e| e == "wasm");
                    if let (true, Some(name)) = (is_wasm, path.file_name()) {
                        deb.push(name.to_string_lossy().into_owned(), Instant::now());
                    }
                }
                Ok(None) => return,
                Err(_) => {}
            }
            if let Some(ev) = deb.take_due(Instant::now()) {
                if tx.send(ev).is_err() {
                    return;
                }
            }
        }
    });
    Ok((DirWatcher { _watcher: watcher }, rx))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn burst_becomes_one_event() {
        let t0 = Instant::now();
        let q = Duration::from_millis(200);
        let mut d = Debouncer::new(q);
        assert!(d.take_due(t0).is_none());
        d.push("a.wasm".into(), t0);
        d.push("a.wasm".into(), t0 + Duration::from_millis(100));
        d.push("b.wasm".into(), t0 + Duration::from_millis(150));
        assert!(d.take_due(t0 + Duration::from_millis(300)).is_none());
        let ev = d.take_due(t0 + Duration::from_millis(350)).unwrap();
        assert_eq!(ev.files, vec!["a.wasm".to_owned(), "b.wasm".to_owned()]);
        assert!(d.take_due(t0 + Duration::from_secs(5)).is_none());
    }
}
