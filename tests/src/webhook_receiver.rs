//! A webhook receiver for the tests: a tiny HTTP/1.1 server on a loopback
//! port (keep-alive, Content-Length bodies) that records every request and
//! answers as scripted, and can SIGKILL the API at an exact point of a
//! delivery (before or after its answer) to test crash recovery.
//!
//! Hand-written rather than a framework's server so that the test controls
//! exactly when bytes are read and written, and what happens in between.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the receiver got it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// When the request was complete.
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn id(&self) -> String {
        self.header("webhook-id").to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Answer {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Waits, then answers.
    After(Duration, Box<Reply>),
}

/// Answers `code` with a short text body.
pub fn status(code: u16) -> Reply {
    Reply::Answer {
        code,
        headers: Vec::new(),
        body: format!("answer {code}"),
    }
}

/// Answers 200.
pub fn ok() -> Reply {
    status(200)
}

/// Answers `code` with one more header.
pub fn with_header(code: u16, name: &str, value: &str) -> Reply {
    Reply::Answer {
        code,
        headers: vec![(name.to_string(), value.to_string())],
        body: format!("answer {code}"),
    }
}

/// A crash to cause from inside the receiver, at an exact point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillPoint {
    /// SIGKILL the API when a request with a webhook-id not seen before
    /// arrives, before answering it.
    BeforeAnswer,
    /// SIGKILL the API right after a 2xx to such a request is written.
    AfterAnswer,
}

#[derive(Debug, Default)]
struct ReceiverState {
    requests: Vec<Received>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
    /// (webhook-id, status) of every response fully written.
    answered: Vec<(String, u16)>,
    /// Armed crash: the point and the API's pid.
    kill: Option<(KillPoint, u32)>,
    /// Ids seen before (for the kill trigger).
    seen: HashSet<String>,
    /// Times the armed crash fired.
    kills: usize,
}

#[derive(Debug, Clone)]
pub struct Receiver {
    port: u16,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start(default: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(ReceiverState {
            default: Some(default),
            ..Default::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(shared.clone(), stream));
            }
        });
        Self { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers the next requests so, then the default again.
    pub fn script(&self, replies: Vec<Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = Some(reply);
    }

    pub fn arm_kill(&self, point: KillPoint, pid: u32) {
        self.state.lock().unwrap().kill = Some((point, pid));
    }

    /// Disarms; true if the crash fired meanwhile.
    pub fn disarm(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        let fired = state.kill.is_none();
        state.kill = None;
        fired
    }

    /// Whether a crash is armed and has not fired yet.
    pub fn is_armed(&self) -> bool {
        self.state.lock().unwrap().kill.is_some()
    }

    pub fn kills(&self) -> usize {
        self.state.lock().unwrap().kills
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_for(&self, id: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.id() == id)
            .collect()
    }

    pub fn answered(&self) -> Vec<(String, u16)> {
        self.state.lock().unwrap().answered.clone()
    }

    /// Waits until at least `count` requests carry `id`; returns them.
    pub async fn wait_for(&self, id: &str, count: usize, timeout: Duration) -> Vec<Received> {
        crate::poll(
            timeout,
            Duration::from_millis(5),
            async || {
                let found = self.requests_for(id);
                if found.len() >= count {
                    Ok(found)
                } else {
                    Err(found.len())
                }
            },
            |found| {
                format!(
                    "the receiver got {found} of {count} requests with webhook-id {id} in \
                     {timeout:?}; it got {} requests in all",
                    self.requests().len()
                )
            },
        )
        .await
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// SIGKILL to `pid`, as a crash would.
fn kill_pid(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

async fn serve(state: Arc<Mutex<ReceiverState>>, mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_string();
        let path = request_line.next().unwrap_or_default().to_string();
        let mut headers = HeaderMap::new();
        let mut length = 0usize;
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.append(name, value);
            }
        }
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let received = Received {
            method,
            path,
            headers,
            body,
            at: Instant::now(),
        };
        let id = received.id();
        let (mut reply, kill_after) = {
            let mut s = state.lock().unwrap();
            s.requests.push(received);
            let reply = s
                .script
                .pop_front()
                .or_else(|| s.default.clone())
                .unwrap_or_else(ok);
            let fresh = s.seen.insert(id.clone());
            let mut kill_after = None;
            if fresh && let Some((point, pid)) = s.kill {
                s.kill = None;
                s.kills += 1;
                match point {
                    KillPoint::BeforeAnswer => kill_pid(pid),
                    KillPoint::AfterAnswer => kill_after = Some(pid),
                }
            }
            (reply, kill_after)
        };
        let (code, extra, text) = loop {
            match reply {
                Reply::After(delay, next) => {
                    tokio::time::sleep(delay).await;
                    reply = *next;
                }
                Reply::Answer {
                    code,
                    headers,
                    body,
                } => break (code, headers, body),
            }
        };
        let mut response = format!(
            "HTTP/1.1 {code} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n",
            reason(code),
            text.len()
        );
        for (name, value) in extra {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&text);
        let written = stream.write_all(response.as_bytes()).await.is_ok();
        if let Some(pid) = kill_after {
            kill_pid(pid);
        }
        if !written {
            return;
        }
        state.lock().unwrap().answered.push((id, code));
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::stack::http_client;

    async fn post(receiver: &Receiver, path: &str, id: &str, body: &str) -> (u16, String) {
        let response = http_client()
            .post(receiver.url(path))
            .header("webhook-id", id)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST to the receiver");
        let code = response.status().as_u16();
        (code, response.text().await.expect("body"))
    }

    #[tokio::test]
    async fn records_requests_and_answers_as_scripted_then_by_default() {
        let receiver = Receiver::start(status(503)).await;
        receiver.script(vec![with_header(410, "x-test", "scripted"), ok()]);
        assert_eq!(post(&receiver, "/a", "msg_1", "{\"n\": 1}").await.0, 410);
        assert_eq!(
            post(&receiver, "/b", "msg_2", "{\"n\": 2}").await,
            (200, "answer 200".to_string())
        );
        assert_eq!(post(&receiver, "/c", "msg_1", "{\"n\": 3}").await.0, 503);
        receiver.set_default(ok());
        assert_eq!(post(&receiver, "/d", "msg_3", "{}").await.0, 200);

        let requests = receiver.requests();
        assert_eq!(requests.len(), 4);
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, "/a");
        assert_eq!(requests[0].header("content-type"), "application/json");
        assert_eq!(requests[1].json()["n"], 2);
        let ids: Vec<String> = receiver
            .requests_for("msg_1")
            .iter()
            .map(|r| r.json()["n"].to_string())
            .collect();
        assert_eq!(ids, ["1", "3"]);
        assert_eq!(
            receiver.answered(),
            [
                ("msg_1".to_string(), 410),
                ("msg_2".to_string(), 200),
                ("msg_1".to_string(), 503),
                ("msg_3".to_string(), 200)
            ]
        );
        assert_eq!(
            receiver
                .wait_for("msg_1", 2, Duration::from_secs(1))
                .await
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn a_delayed_reply_answers_after_its_delay() {
        let receiver =
            Receiver::start(Reply::After(Duration::from_millis(300), Box::new(ok()))).await;
        let started = Instant::now();
        assert_eq!(post(&receiver, "/slow", "msg_slow", "{}").await.0, 200);
        // A lower bound only: a busy machine may answer later, never sooner.
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn an_armed_kill_fires_once_on_the_first_new_webhook_id() {
        let receiver = Receiver::start(ok()).await;
        assert_eq!(post(&receiver, "/seen", "msg_seen", "{}").await.0, 200);
        let mut victim = Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        receiver.arm_kill(KillPoint::AfterAnswer, victim.id());
        // An id seen before does not trigger it.
        assert_eq!(post(&receiver, "/seen", "msg_seen", "{}").await.0, 200);
        assert_eq!(receiver.kills(), 0);
        assert!(receiver.is_armed());
        assert_eq!(post(&receiver, "/new", "msg_new", "{}").await.0, 200);
        let status = victim.wait().expect("wait for sleep");
        assert!(!status.success(), "killed: {status:?}");
        assert_eq!(receiver.kills(), 1);
        assert!(receiver.disarm(), "the crash fired");
    }
}
