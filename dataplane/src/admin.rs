//! The admin socket: a Unix stream socket on which a running engine answers questions.
//!
//! Protocol: the client writes one command line (`status`, `counters`, `routes`,
//! `neighbours`), the engine writes one JSON document and closes. The server runs on its own
//! thread and only reads state the engine thread publishes ([`AdminState`]); it never touches
//! the packet path.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::counters::SharedCounters;

/// What the admin thread can see of an engine.
pub struct AdminState {
    pub node: String,
    pub counters: Arc<SharedCounters>,
    /// Static description of ports and routes (from the configuration).
    pub ports: Value,
    pub routes: Value,
    /// Neighbour table snapshot, refreshed by the engine when it changes.
    pub neighbours: Mutex<Value>,
}

impl AdminState {
    fn answer(&self, cmd: &str) -> Value {
        match cmd {
            "status" => json!({
                "node": self.node,
                "ready": self.counters.ready.load(std::sync::atomic::Ordering::Acquire),
                "ports": self.ports,
            }),
            "counters" => self.counters.to_json(),
            "routes" => self.routes.clone(),
            "neighbours" => self
                .neighbours
                .lock()
                .map(|v| v.clone())
                .unwrap_or(Value::Null),
            other => {
                json!({"error": format!("unknown command {other:?}; try status, counters, routes, neighbours")})
            }
        }
    }
}

/// A bound admin socket; the file is removed when this is dropped.
pub struct AdminServer {
    path: PathBuf,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bind `path` (creating its directory; replacing a stale socket file that nobody answers on)
/// and serve `state` from a background thread.
pub fn serve(path: &Path, state: Arc<AdminState>) -> io::Result<AdminServer> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ctx(e, format!("creating {}", dir.display())))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "admin socket {} is in use: is another engine running for this node?",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| ctx(e, format!("removing stale {}", path.display())))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| ctx(e, format!("binding admin socket {}", path.display())))?;
    std::thread::Builder::new()
        .name("sluice-admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                if BufReader::new(&mut conn)
                    .take(256)
                    .read_line(&mut line)
                    .is_err()
                {
                    continue;
                }
                let answer = state.answer(line.trim());
                let _ = conn.write_all(answer.to_string().as_bytes());
                let _ = conn.write_all(b"\n");
            }
        })?;
    Ok(AdminServer {
        path: path.to_path_buf(),
    })
}

/// Ask the engine behind `path` one question.
pub fn query(path: &Path, cmd: &str) -> io::Result<Value> {
    let mut s = UnixStream::connect(path)
        .map_err(|e| ctx(e, format!("connecting to admin socket {}", path.display())))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(cmd.as_bytes())?;
    s.write_all(b"\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("admin socket {}: bad answer: {e}", path.display()),
        )
    })?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, err.to_string()));
    }
    Ok(v)
}

fn ctx(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
