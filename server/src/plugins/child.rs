//! `settle plugin-host`: the child end of an out-of-process plugin (see [`super::process`]).
//!
//! It loads one plugin, a library with the same checks the server applies or a built-in by id,
//! says hello on its protocol pipe, then serves request frames from stdin, each on its own thread
//! so that one slow call does not hold the others (the server bounds how many are in flight). It
//! exits when stdin closes: the server stopped or let it go.
//!
//! The protocol pipe is the stdout it was started with, moved to another descriptor before the
//! plugin runs; descriptor 1 then points at stderr. A plugin that prints (a stray `println!`, or
//! junk) therefore only adds lines to Settle's log and never corrupts the frames.

use std::fs::File;
use std::io::{BufReader, Write};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use settle_plugin::PaymentMethodPlugin;
use settle_plugin::abi::{Method, dispatch};

use super::library::{Entry, PluginLibrary};
use super::process::{Hello, Request, Response, read_frame};

/// What the child serves.
pub enum Served {
    Library(PluginLibrary),
    BuiltIn(Arc<dyn PaymentMethodPlugin>),
}

impl Served {
    fn call(&self, entry: Entry, input: &[u8]) -> (i32, Vec<u8>) {
        match self {
            Served::Library(library) => library.call_raw(entry, input),
            Served::BuiltIn(plugin) => dispatch(|| &**plugin, method(entry), input),
        }
    }
}

/// The SDK's name for an entry.
pub fn method(entry: Entry) -> Method {
    match entry {
        Entry::Manifest => Method::Manifest,
        Entry::ValidateConfig => Method::ValidateConfig,
        Entry::Charge => Method::Charge,
        Entry::Refund => Method::Refund,
        Entry::Status => Method::Status,
    }
}

/// Takes descriptor 1 for the protocol and points descriptor 1 at stderr.
fn protocol_pipe() -> std::io::Result<File> {
    // SAFETY: plain descriptor calls on this process's own standard descriptors, before any
    // other thread runs; the duplicate is owned by the returned File alone.
    unsafe {
        let protocol = libc::dup(1);
        if protocol < 0 || libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::fcntl(protocol, libc::F_SETFD, libc::FD_CLOEXEC);
        Ok(File::from_raw_fd(protocol))
    }
}

fn send(out: &Mutex<File>, frame: &impl serde::Serialize) {
    let mut line = serde_json::to_vec(frame).expect("frames serialize");
    line.push(b'\n');
    let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
    // The server is gone if this fails; stdin closing ends the process.
    let _ = out.write_all(&line).and_then(|()| out.flush());
}

/// Loads the plugin named by `library` or `built_in`, then serves until stdin closes. Returns the
/// exit code.
pub fn run(library: Option<&Path>, built_in: Option<&str>, built_ins: Vec<Arc<dyn PaymentMethodPlugin>>) -> i32 {
    let out = match protocol_pipe() {
        Ok(file) => Arc::new(Mutex::new(file)),
        Err(error) => {
            eprintln!("settle plugin-host: cannot set up the protocol pipe: {error}");
            return 2;
        }
    };
    let served = match (library, built_in) {
        (Some(path), None) => PluginLibrary::load(path).map(Served::Library),
        (None, Some(id)) => built_ins
            .into_iter()
            .find(|plugin| plugin.manifest().id == id)
            .map(Served::BuiltIn)
            .ok_or_else(|| format!("there is no built-in plugin {id:?}")),
        _ => Err("give a library path or --built-in ID".to_owned()),
    };
    let served = match served {
        Ok(served) => Arc::new(served),
        Err(reason) => {
            send(&out, &Hello::Refused(reason));
            return 1;
        }
    };
    send(&out, &Hello::Ready);
    let mut stdin = BufReader::new(std::io::stdin().lock());
    while let Ok(Some(line)) = read_frame(&mut stdin) {
        let Ok(request) = serde_json::from_slice::<Request>(&line) else {
            eprintln!("settle plugin-host: a request frame that does not parse; stopping");
            return 2;
        };
        let (served, out) = (served.clone(), out.clone());
        let spawned = std::thread::Builder::new().name(format!("plugin-call {}", request.id)).spawn(move || {
            let (code, answer) = served.call(request.entry, request.input.as_bytes());
            send(&out, &Response { id: request.id, code, answer: String::from_utf8_lossy(&answer).into_owned() });
        });
        if let Err(error) = spawned {
            eprintln!("settle plugin-host: cannot start a call thread: {error}");
            return 2;
        }
    }
    // Threads still running a call (a spinning plugin) end with the process.
    0
}
