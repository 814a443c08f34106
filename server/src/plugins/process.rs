//! Out-of-process plugins: one `settle plugin-host` child per plugin, spoken to over its stdin and
//! stdout, and the supervision that keeps whatever the child does away from the server.
//!
//! The child (see [`super::child`]) loads one plugin and passes each call to it unchanged: the
//! frames carry the same JSON the C ABI carries, one frame a line. [`ProcessPlugin::invoke`] is
//! synchronous like every plugin call (the host runs it on a blocking thread under its timeout):
//! it writes a request frame and waits for the answer frame with the same id, which a reader
//! thread per child hands over.
//!
//! What a misbehaving child can do, and what the server sees of it:
//! - it dies (abort, segfault, stack overflow, allocation beyond its RLIMIT_AS): its pipe closes
//!   and every call it was serving fails as [`CallError::Crashed`], a fault: a charge's outcome is
//!   unknown and the reconciler settles it by asking the plugin's status;
//! - it writes a line that is not an answer frame: it is killed, as if it had died;
//! - it leaves a call unanswered past the hang limit (a spin that ignores the timeout): the
//!   caller already had its timeout; the child is killed then, as if it had died.
//!
//! A dead child is started again by the next call, after a backoff that doubles with each death in
//! a row (100 ms up to 10 s) and resets when a child answers. Until then calls are refused with
//! [`CallError::Unavailable`] without reaching the plugin. This module knows nothing of charges:
//! health and what an error means for a payment are decided by the caller.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::CallError;
use super::library::{Entry, decode_answer};

/// The longest frame either side reads; a longer line is garbage.
pub const FRAME_BYTES_MAX: usize = 16 << 20;
/// Backoff before the first restart after a death; it doubles with each death in a row.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The child's first line: it loaded its plugin, or why it could not.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hello {
    Ready,
    Refused(String),
}

/// A call, server to child: the entry and the JSON input bytes the C ABI would get.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub entry: Entry,
    pub input: String,
}

/// An answer, child to server: the C ABI's return code and answer bytes, unchanged.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub code: i32,
    pub answer: String,
}

/// How to start a plugin's child and the limits it runs under.
#[derive(Clone)]
pub struct Launch {
    /// Names the plugin in logs (its file or built-in id).
    pub label: String,
    /// The `settle` binary.
    pub program: PathBuf,
    /// `plugin-host LIBRARY` or `plugin-host --built-in ID`.
    pub args: Vec<OsString>,
    /// The child's address-space limit (RLIMIT_AS) in MiB; 0 for none.
    pub memory_limit_mib: u64,
    /// How long a call may stay unanswered before the child is killed.
    pub hang_limit: Duration,
    /// How long the child may take to load its plugin, and a call to wait for a free slot.
    pub start_timeout: Duration,
    /// Calls in flight at once in one child.
    pub calls_max: usize,
}

/// A plugin served by a child process.
pub struct ProcessPlugin {
    shared: Arc<Shared>,
}

struct Shared {
    launch: Launch,
    state: Mutex<State>,
    in_flight: Mutex<usize>,
    slot_freed: Condvar,
    next_id: AtomicU64,
    restarts: AtomicU64,
    /// The `settle_plugin_restarts_total` series of this plugin, once its id is known.
    restarts_metric: OnceLock<prometheus::IntCounter>,
}

#[derive(Default)]
struct State {
    running: Option<Arc<Running>>,
    started_once: bool,
    deaths_in_a_row: u32,
    start_after: Option<Instant>,
}

/// A live child: its pipe in, and what the reader thread shares with callers.
struct Running {
    child: Arc<Child>,
    stdin: Mutex<ChildStdin>,
}

struct Child {
    /// Also the process group id: the child leads its own group.
    pid: i32,
    /// Callers waiting for an answer, by request id; None once the child is dead (and reaped).
    pending: Mutex<Option<HashMap<u64, mpsc::Sender<Result<Response, CallError>>>>>,
    /// Why the server killed it, when it did.
    kill_reason: Mutex<Option<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Child {
    /// Kills the child's whole process group, unless it is already dead. Under the `pending`
    /// lock, so a reaped child's id (which the system may give to another process) is never hit.
    fn kill(&self, reason: &str) {
        let pending = lock(&self.pending);
        if pending.is_some() {
            lock(&self.kill_reason).get_or_insert_with(|| reason.to_owned());
            // SAFETY: plain system call; the group is the child's own (process_group(0)).
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        }
    }
}

/// Frees an in-flight slot when a call ends, however it ends.
struct Slot<'a>(&'a Shared);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.in_flight) -= 1;
        self.0.slot_freed.notify_one();
    }
}

impl ProcessPlugin {
    /// Starts the child and waits until it has loaded its plugin; refuses with the child's reason.
    pub fn start(launch: Launch) -> Result<ProcessPlugin, String> {
        let shared = Arc::new(Shared {
            launch,
            state: Mutex::new(State::default()),
            in_flight: Mutex::new(0),
            slot_freed: Condvar::new(),
            next_id: AtomicU64::new(1),
            restarts: AtomicU64::new(0),
            restarts_metric: OnceLock::new(),
        });
        let running = start_child(&shared)?;
        let mut state = lock(&shared.state);
        state.running = Some(running);
        state.started_once = true;
        drop(state);
        Ok(ProcessPlugin { shared })
    }

    /// Counts restarts in `counter` from now on.
    pub fn count_restarts_in(&self, counter: prometheus::IntCounter) {
        let _ = self.shared.restarts_metric.set(counter);
    }

    /// Times a dead child was started again.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Runs one call in the child; blocks until it answers, dies or passes the hang limit.
    pub fn invoke(&self, entry: Entry, input: &[u8]) -> Result<serde_json::Value, CallError> {
        let shared = &self.shared;
        let _slot = shared.take_slot()?;
        let running = shared.running()?;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel();
        match lock(&running.child.pending).as_mut() {
            Some(pending) => pending.insert(id, sender),
            None => return Err(CallError::Unavailable("the plugin's process has just stopped".into())),
        };
        let request = Request { id, entry, input: String::from_utf8_lossy(input).into_owned() };
        let mut frame = serde_json::to_vec(&request).map_err(|e| CallError::Malformed(e.to_string()))?;
        frame.push(b'\n');
        let written = {
            let mut stdin = lock(&running.stdin);
            stdin.write_all(&frame).and_then(|()| stdin.flush())
        };
        if let Err(error) = written {
            // The pipe is closed: the child is dying and the reader will answer this call.
            tracing::debug!(plugin = %shared.launch.label, %error, "writing to a plugin process failed");
        }
        match receiver.recv_timeout(shared.launch.hang_limit) {
            Ok(Ok(response)) => {
                lock(&shared.state).deaths_in_a_row = 0;
                decode_answer(response.code, response.answer.as_bytes())
            }
            Ok(Err(error)) => Err(error),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let reason = format!("it left a call unanswered for {} ms", shared.launch.hang_limit.as_millis());
                running.child.kill(&reason);
                Err(CallError::Timeout)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CallError::Crashed("the plugin's process stopped".into())),
        }
    }
}

impl Drop for ProcessPlugin {
    /// A replaced or dropped plugin takes its child with it.
    fn drop(&mut self) {
        if let Some(running) = lock(&self.shared.state).running.take() {
            running.child.kill("the plugin was replaced or the server stopped");
        }
    }
}

impl Shared {
    fn take_slot(&self) -> Result<Slot<'_>, CallError> {
        let deadline = Instant::now() + self.launch.start_timeout;
        let mut in_flight = lock(&self.in_flight);
        while *in_flight >= self.launch.calls_max.max(1) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Busy);
            }
            in_flight = self.slot_freed.wait_timeout(in_flight, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        *in_flight += 1;
        Ok(Slot(self))
    }

    /// The live child, started again if it died and its backoff has passed.
    fn running(self: &Arc<Self>) -> Result<Arc<Running>, CallError> {
        let mut state = lock(&self.state);
        if let Some(running) = &state.running {
            return Ok(running.clone());
        }
        if let Some(at) = state.start_after {
            let wait = at.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                return Err(CallError::Unavailable(format!("its process is restarting (in {} ms)", wait.as_millis())));
            }
        }
        // Started under the lock: callers meanwhile wait for this child rather than start more.
        match start_child(self) {
            Ok(running) => {
                if state.started_once {
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                    if let Some(metric) = self.restarts_metric.get() {
                        metric.inc();
                    }
                    tracing::info!(plugin = %self.launch.label, "plugin process restarted");
                }
                state.started_once = true;
                state.running = Some(running.clone());
                Ok(running)
            }
            Err(reason) => {
                state.deaths_in_a_row += 1;
                state.start_after = Some(Instant::now() + backoff(state.deaths_in_a_row));
                tracing::warn!(plugin = %self.launch.label, %reason, "plugin process did not start");
                Err(CallError::Unavailable(format!("its process did not start: {reason}")))
            }
        }
    }

    /// Called by the reader thread once `child` is dead and reaped.
    fn buried(&self, child: &Arc<Child>) {
        let mut state = lock(&self.state);
        if state.running.as_ref().is_some_and(|running| Arc::ptr_eq(&running.child, child)) {
            state.running = None;
        }
        state.deaths_in_a_row += 1;
        state.start_after = Some(Instant::now() + backoff(state.deaths_in_a_row));
    }
}

fn backoff(deaths_in_a_row: u32) -> Duration {
    BACKOFF_FIRST.saturating_mul(1 << deaths_in_a_row.saturating_sub(1).min(16)).min(BACKOFF_MAX)
}

/// Starts a child and waits for its hello. Its limits are set between fork and exec, so they hold
/// before the plugin's first instruction; it leads its own process group, so killing the group
/// also takes any process the plugin started.
fn start_child(shared: &Arc<Shared>) -> Result<Arc<Running>, String> {
    let launch = &shared.launch;
    let memory_bytes = launch.memory_limit_mib.saturating_mul(1 << 20);
    let mut command = Command::new(&launch.program);
    command.args(&launch.args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only makes system calls that
    // are async-signal-safe (setrlimit).
    unsafe {
        command.pre_exec(move || {
            let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if memory_bytes > 0 {
                let memory = libc::rlimit { rlim_cur: memory_bytes as libc::rlim_t, rlim_max: memory_bytes as libc::rlim_t };
                if libc::setrlimit(libc::RLIMIT_AS, &memory) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    let mut process = command.spawn().map_err(|e| format!("cannot start {}: {e}", launch.program.display()))?;
    let stdin = process.stdin.take().expect("piped stdin");
    let stdout = process.stdout.take().expect("piped stdout");
    let stderr = process.stderr.take().expect("piped stderr");
    let child = Arc::new(Child {
        pid: process.id() as i32,
        pending: Mutex::new(Some(HashMap::new())),
        kill_reason: Mutex::new(None),
    });
    forward_log(launch.label.clone(), stderr);
    let (hello_sender, hello) = mpsc::channel();
    let reader_child = child.clone();
    let weak = Arc::downgrade(shared);
    let label = launch.label.clone();
    std::thread::Builder::new()
        .name(format!("plugin-reader {label}"))
        .spawn(move || read_answers(label, process, stdout, reader_child, weak, hello_sender))
        .map_err(|e| format!("cannot start a reader thread: {e}"))?;
    match hello.recv_timeout(launch.start_timeout) {
        Ok(Ok(())) => Ok(Arc::new(Running { child, stdin: Mutex::new(stdin) })),
        Ok(Err(reason)) => {
            child.kill("it refused to start");
            Err(reason)
        }
        Err(_) => {
            child.kill("it did not load its plugin in time");
            Err(format!("it did not load its plugin within {} ms", launch.start_timeout.as_millis()))
        }
    }
}

/// Reads one line of at most FRAME_BYTES_MAX; None at the end of the pipe.
pub fn read_frame(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let read = reader.by_ref().take(FRAME_BYTES_MAX as u64 + 1).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    Ok(Some(line))
}

/// The reader thread: the hello, then answers to their callers until the child dies or
/// misbehaves; then it kills and reaps the child and fails every call still waiting.
fn read_answers(
    label: String,
    mut process: std::process::Child,
    stdout: std::process::ChildStdout,
    child: Arc<Child>,
    shared: Weak<Shared>,
    hello: mpsc::Sender<Result<(), String>>,
) {
    let mut reader = BufReader::new(stdout);
    let garbage = |what: &[u8]| format!("it wrote something that is not a frame: {:?}", String::from_utf8_lossy(&what[..what.len().min(80)]));
    let mut hello = Some(hello);
    loop {
        let line = match read_frame(&mut reader) {
            Ok(Some(line)) => line,
            Ok(None) | Err(_) => break,
        };
        if let Some(hello) = hello.take() {
            let said = match serde_json::from_slice::<Hello>(&line) {
                Ok(Hello::Ready) => Ok(()),
                Ok(Hello::Refused(reason)) => Err(reason),
                Err(_) => Err(garbage(&line)),
            };
            let ready = said.is_ok();
            let _ = hello.send(said);
            if ready {
                continue;
            }
            break;
        }
        let Ok(response) = serde_json::from_slice::<Response>(&line) else {
            child.kill(&garbage(&line));
            break;
        };
        let waiting = lock(&child.pending).as_mut().and_then(|pending| pending.remove(&response.id));
        match waiting {
            Some(sender) => {
                let _ = sender.send(Ok(response));
            }
            // A caller that gave up has no sender any more; an id never sent is garbage.
            None if response.id < shared.upgrade().map_or(0, |s| s.next_id.load(Ordering::Relaxed)) => {}
            None => {
                child.kill(&format!("it answered request {} that was never sent", response.id));
                break;
            }
        }
    }
    // Dead or condemned: make sure of it, then reap it, then fail whoever still waits.
    let waiting = {
        let mut pending = lock(&child.pending);
        // SAFETY: plain system call on the child's own group, before it is reaped.
        unsafe { libc::kill(-child.pid, libc::SIGKILL) };
        pending.take().unwrap_or_default()
    };
    let status = process.wait().map(|status| describe(&status)).unwrap_or_else(|e| format!("cannot be waited for: {e}"));
    let reason = match lock(&child.kill_reason).take() {
        Some(killed) => format!("the plugin's process was killed: {killed}"),
        None => format!("the plugin's process stopped ({status})"),
    };
    if let Some(hello) = hello.take() {
        let _ = hello.send(Err(reason.clone()));
    } else {
        tracing::warn!(plugin = %label, %reason, calls_cut_short = waiting.len(), "plugin process died");
    }
    for (_, sender) in waiting {
        let _ = sender.send(Err(CallError::Crashed(reason.clone())));
    }
    if let Some(shared) = shared.upgrade() {
        shared.buried(&child);
    }
}

/// "killed by signal 11 (SIGSEGV)" or "exit status 3".
fn describe(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGILL => " (SIGILL)",
                _ => "",
            };
            format!("killed by signal {signal}{name}")
        }
        None => status.to_string(),
    }
}

/// The child's stderr (its own messages and whatever the plugin prints) goes to Settle's log.
fn forward_log(label: String, stderr: std::process::ChildStderr) {
    let _ = std::thread::Builder::new().name(format!("plugin-log {label}")).spawn(move || {
        let mut reader = BufReader::new(stderr);
        while let Ok(Some(line)) = read_frame(&mut reader) {
            let text = String::from_utf8_lossy(&line[..line.len().min(2000)]);
            tracing::warn!(plugin = %label, "plugin output: {}", text.trim_end());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that is not a plugin host at all: a shell script standing in for one that
    /// misbehaves on the pipe.
    fn script(text: &str) -> Launch {
        Launch {
            label: "script".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), text.into()],
            memory_limit_mib: 0,
            hang_limit: Duration::from_millis(1500),
            start_timeout: Duration::from_secs(5),
            calls_max: 2,
        }
    }

    #[test]
    fn a_child_that_writes_garbage_is_killed_and_its_call_fails_as_a_crash() {
        let plugin = ProcessPlugin::start(script(r#"echo '"ready"'; read line; echo 'garbage, not a frame'; sleep 30"#)).unwrap();
        let started = Instant::now();
        match plugin.invoke(Entry::Charge, b"{}") {
            Err(CallError::Crashed(reason)) => assert!(reason.contains("not a frame"), "{reason}"),
            other => panic!("expected a crash, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "killed at once, not after its sleep");
    }

    #[test]
    fn a_child_that_answers_is_served_and_one_that_dies_is_restarted_after_a_backoff() {
        // Answers one request with the ok envelope, then exits.
        let answer = r#"read line; id=$(echo "$line" | sed 's/.*"id":\([0-9]*\).*/\1/'); echo "{\"id\":$id,\"code\":0,\"answer\":\"{\\\"ok\\\":7}\"}"; exit 3"#;
        let plugin = ProcessPlugin::start(script(&format!(r#"echo '"ready"'; {answer}"#))).unwrap();
        assert_eq!(plugin.invoke(Entry::Status, b"{}"), Ok(serde_json::json!(7)));
        // The child exits after its answer; the next call meets its death or the backoff, and a
        // later one a new child.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match plugin.invoke(Entry::Status, b"{}") {
                Ok(value) => {
                    assert_eq!(value, serde_json::json!(7));
                    break;
                }
                Err(CallError::Unavailable(_) | CallError::Crashed(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                other => panic!("expected a restarted child to answer, got {other:?}"),
            }
        }
        assert_eq!(plugin.restarts(), 1);
    }

    #[test]
    fn a_child_that_refuses_to_load_gives_its_reason() {
        match ProcessPlugin::start(script(r#"echo '{"refused":"it speaks plugin ABI version 999"}'"#)) {
            Err(reason) => assert!(reason.contains("999"), "{reason}"),
            Ok(_) => panic!("started"),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
