//! The capture read on a thread of its own, as a script of requests with
//! their captured answers, handed to the replay through a bounded channel:
//! reading runs ahead of sending by at most the channel's length plus what
//! the script builder holds back.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use capture::replay::{Exchange, ScriptBuilder, ScriptOptions, ScriptStats};
use capture::{CaptureDecoder, CaptureReader, DecoderOptions};
use indicatif::ProgressBar;
use iso8583::Spec;
use tokio::sync::mpsc;

/// Exchanges read ahead of the replay at most.
const READ_AHEAD: usize = 1024;

#[derive(Debug)]
pub enum ScriptItem {
    Exchange(Box<Exchange>),
    /// A packet or the file could not be read: what was read is replayed.
    CaptureError(String),
    End(ScriptStats),
}

/// Starts reading `path`; `progress` advances with the bytes read.
pub fn spawn(
    path: PathBuf,
    spec: Arc<Spec>,
    decoder: DecoderOptions,
    script: ScriptOptions,
    progress: ProgressBar,
) -> anyhow::Result<(mpsc::Receiver<ScriptItem>, JoinHandle<()>)> {
    let file = File::open(&path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    if let Ok(meta) = file.metadata() {
        progress.set_length(meta.len());
    }
    let input = BufReader::with_capacity(1 << 16, progress.wrap_read(file));
    let mut reader = CaptureReader::new(input)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let thread = std::thread::Builder::new()
        .name("capture-reader".into())
        .spawn(move || {
            let mut decoder = CaptureDecoder::new(&spec, decoder);
            let mut builder = ScriptBuilder::new(script);
            let mut events = Vec::new();
            let mut ready = Vec::new();
            let send = |item| tx.blocking_send(item).is_ok();
            loop {
                match reader.next_packet() {
                    Ok(Some(packet)) => {
                        if let Err(reason) = decoder.packet(&packet, &mut events) {
                            let error = format!("packet {}: {reason}", packet.number);
                            if !send(ScriptItem::CaptureError(error)) {
                                return;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = send(ScriptItem::CaptureError(format!("{}: {e}", path.display())));
                        break;
                    }
                }
                for event in events.drain(..) {
                    builder.event(&event, &mut ready);
                }
                for exchange in ready.drain(..) {
                    if !send(ScriptItem::Exchange(Box::new(exchange))) {
                        return;
                    }
                }
            }
            decoder.finish(&mut events);
            for event in events.drain(..) {
                builder.event(&event, &mut ready);
            }
            builder.finish(&mut ready);
            for exchange in ready.drain(..) {
                if !send(ScriptItem::Exchange(Box::new(exchange))) {
                    return;
                }
            }
            let _ = send(ScriptItem::End(builder.stats().clone()));
        })?;
    Ok((rx, thread))
}
