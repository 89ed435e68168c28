//! A local mirror of the Hugging Face Hub for tests: a folder tree served as Hub repos on 127.0.0.1.
//!
//! `ROOT/models/OWNER/NAME/...` and `ROOT/datasets/OWNER/NAME/...` are repos with one revision,
//! `main`, whose commit hash is derived from the files (editing a file is a new upstream
//! commit). Served like the Hub: `GET /api/{models,datasets}/OWNER/NAME/revision/REV` (the commit
//! and the file list, `siblings`), `GET [/datasets]/OWNER/NAME/resolve/REV/FILE` with the headers
//! a Hub client reads (`x-repo-commit`, `etag`: the git blob SHA-1 of a small text file;
//! `x-linked-etag`: the SHA-256 of a large file, which is answered with a 302 to its storage URL,
//! as the Hub redirects LFS files), ranges (`Range` -> 206 + `content-range`), and the Hub's
//! errors (404 with `x-error-code`, 401 without the token). Switches: require a token, break
//! the connection off after N bytes of a file (once or always), and the log of requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// When a file's connection breaks off (see [`HubServer::cut_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The first transfer reaching the byte offset breaks off there; later ones are whole.
    Once,
    /// Every transfer reaching the byte offset breaks off there (one resumed at the offset
    /// breaks off at once): the file cannot be fetched whole.
    Always,
}

#[derive(Debug, Default)]
struct Switches {
    token: Option<String>,
    cut: Option<(String, u64, Cut)>,
    log: Vec<String>,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    url: String,
    switches: Mutex<Switches>,
}

/// The running server; stopped on [`HubServer::stop`] or drop (the port then refuses connections).
#[derive(Debug)]
pub struct HubServer {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HubServer {
    /// Serve `root` on a free port of 127.0.0.1.
    pub fn start(root: &Path) -> HubServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let root = root.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .expect("bind 127.0.0.1:0");
                let addr = listener.local_addr().expect("local address");
                let shared = Arc::new(Shared {
                    root,
                    url: format!("http://{addr}"),
                    switches: Mutex::new(Switches::default()),
                });
                tx.send(shared.clone()).expect("report the address");
                let app = Router::new().fallback(handle).with_state(shared);
                tokio::select! {
                    r = axum::serve(listener, app) => r.expect("serve"),
                    _ = stopped => {}
                }
            });
            // open keep-alive connections end with the runtime
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        });
        let shared = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the Hub server did not start");
        HubServer {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The endpoint (`http://127.0.0.1:PORT`), what `HF_ENDPOINT` is set to.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Answer 401 to every request without `Authorization: Bearer TOKEN` (`None`: open again).
    pub fn require_token(&self, token: Option<&str>) {
        self.shared.switches.lock().unwrap().token = token.map(str::to_string);
    }

    /// Break the connection off once the transfer of `file` (a repo path) reaches byte `offset`.
    pub fn cut_after(&self, file: &str, offset: u64, cut: Cut) {
        self.shared.switches.lock().unwrap().cut = Some((file.to_string(), offset, cut));
    }

    /// Serve every file whole again.
    pub fn uncut(&self) {
        self.shared.switches.lock().unwrap().cut = None;
    }

    /// Every request so far, `METHOD PATH` each, plus its `Range` header's value if any.
    pub fn requests(&self) -> Vec<String> {
        self.shared.switches.lock().unwrap().log.clone()
    }

    /// Requests so far whose log entry (see [`HubServer::requests`]) contains `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.contains(needle))
            .count()
    }

    /// Stop serving and wait for the server thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A repo's files (sorted repo paths) and its commit hash (SHA-1 over paths and contents).
fn snapshot(dir: &Path) -> Option<(Vec<String>, String)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if let Ok(rel) = p.strip_prefix(base) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    if !dir.is_dir() {
        return None;
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    let mut h = Sha1::new();
    for f in &files {
        h.update(f.as_bytes());
        h.update(Sha256::digest(
            std::fs::read(dir.join(f)).unwrap_or_default(),
        ));
    }
    Some((files, hex(&h.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Small text files live in git (etag: the git blob SHA-1), everything else in LFS (SHA-256).
fn is_lfs(file: &str) -> bool {
    let small = [".json", ".yaml", ".yml", ".md", ".txt", ".gitattributes"];
    !small.iter().any(|s| file.ends_with(s))
}

fn git_blob_sha1(data: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    hex(&h.finalize())
}

fn reply(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = Response::new(Body::from(
        serde_json::json!({ "error": message }).to_string(),
    ));
    *r.status_mut() = status;
    if !code.is_empty() {
        r.headers_mut()
            .insert("x-error-code", HeaderValue::from_str(code).unwrap());
    }
    r
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let (token, cut) = {
        let mut sw = s.switches.lock().unwrap();
        let range = req
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok());
        sw.log.push(match range {
            Some(r) => format!("{} {path} {r}", req.method()),
            None => format!("{} {path}", req.method()),
        });
        (sw.token.clone(), sw.cut.clone())
    };
    if let Some(t) = token {
        let sent = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if sent != Some(format!("Bearer {t}").as_str()) {
            return reply(
                StatusCode::UNAUTHORIZED,
                "",
                "Invalid credentials in Authorization header",
            );
        }
    }
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|p| p.replace("%2F", "/").replace("%2f", "/"))
        .collect();
    // no empty, `.` or `..` component (also inside a decoded `%2F`): nothing outside ROOT
    if parts
        .iter()
        .any(|p| p.split('/').any(|c| c.is_empty() || c == "." || c == ".."))
    {
        return reply(StatusCode::BAD_REQUEST, "", "bad path");
    }
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    let file_at =
        |(kind, owner, name, rev, file, stored): (&str, &str, &str, &str, &[&str], bool)| {
            let file = file.join("/");
            resolve(
                &s,
                kind,
                owner,
                name,
                rev,
                &file,
                req.headers(),
                stored,
                cut.clone(),
            )
        };
    match p.as_slice() {
        ["api", kind @ ("models" | "datasets"), owner, name, "revision", rev] => {
            let Some((files, commit)) = repo(&s, kind, owner, name, rev) else {
                return not_found(&s, kind, owner, name, rev);
            };
            let siblings: Vec<_> = files
                .iter()
                .map(|f| serde_json::json!({ "rfilename": f }))
                .collect();
            let body = serde_json::json!({
                "id": format!("{owner}/{name}"), "sha": commit, "siblings": siblings
            });
            let mut r = Response::new(Body::from(body.to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        // (kind, owner, name, revision, file, whether this is the LFS storage URL)
        ["datasets", o, n, "resolve", r, f @ ..] => file_at(("datasets", o, n, r, f, false)),
        ["lfs", k @ ("models" | "datasets"), o, n, r, f @ ..] => file_at((k, o, n, r, f, true)),
        [o, n, "resolve", r, f @ ..] => file_at(("models", o, n, r, f, false)),
        _ => reply(StatusCode::NOT_FOUND, "", "no such route"),
    }
}

/// The files and commit of a repo at `rev` (`main` or its commit hash).
fn repo(
    s: &Shared,
    kind: &str,
    owner: &str,
    name: &str,
    rev: &str,
) -> Option<(Vec<String>, String)> {
    let (files, commit) = snapshot(&s.root.join(kind).join(owner).join(name))?;
    (rev == "main" || rev == commit).then_some((files, commit))
}

fn not_found(s: &Shared, kind: &str, owner: &str, name: &str, rev: &str) -> Response {
    if s.root.join(kind).join(owner).join(name).is_dir() {
        reply(
            StatusCode::NOT_FOUND,
            "RevisionNotFound",
            &format!("Invalid rev id: {rev}"),
        )
    } else {
        reply(
            StatusCode::NOT_FOUND,
            "RepoNotFound",
            &format!("Repository not found: {owner}/{name}"),
        )
    }
}

/// A file of a repo: the Hub's headers; LFS files redirect to their storage URL (`stored`).
fn resolve(
    s: &Shared,
    kind: &str,
    owner: &str,
    name: &str,
    rev: &str,
    file: &str,
    headers: &HeaderMap,
    stored: bool,
    cut: Option<(String, u64, Cut)>,
) -> Response {
    let Some((files, commit)) = repo(s, kind, owner, name, rev) else {
        return not_found(s, kind, owner, name, rev);
    };
    if !files.iter().any(|f| f == file) {
        let mut r = reply(
            StatusCode::NOT_FOUND,
            "EntryNotFound",
            &format!("{file} does not exist on \"{rev}\""),
        );
        r.headers_mut()
            .insert("x-repo-commit", HeaderValue::from_str(&commit).unwrap());
        return r;
    }
    let data =
        std::fs::read(s.root.join(kind).join(owner).join(name).join(file)).unwrap_or_default();
    let lfs = is_lfs(file);
    if lfs && !stored {
        let sha = hex(&Sha256::digest(&data));
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::FOUND;
        let h = r.headers_mut();
        let location = format!("{}/lfs/{kind}/{owner}/{name}/{commit}/{file}", s.url);
        h.insert(header::LOCATION, HeaderValue::from_str(&location).unwrap());
        h.insert("x-repo-commit", HeaderValue::from_str(&commit).unwrap());
        h.insert(
            "x-linked-etag",
            HeaderValue::from_str(&format!("\"{sha}\"")).unwrap(),
        );
        h.insert("x-linked-size", HeaderValue::from(data.len() as u64));
        h.insert(
            header::ETAG,
            HeaderValue::from_str(&format!("\"{}\"", git_blob_sha1(&data))).unwrap(),
        );
        return r;
    }
    let total = data.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .map(|v| {
            let (a, b) = v.split_once('-').unwrap_or((v, ""));
            let start = a.trim().parse::<u64>().unwrap_or(0);
            let end = b.trim().parse::<u64>().unwrap_or(total.saturating_sub(1));
            (start, end.min(total.saturating_sub(1)))
        });
    if let Some((start, end)) = range {
        if start >= total || start > end {
            let mut r = reply(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "",
                "range not satisfiable",
            );
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{total}")).unwrap(),
            );
            return r;
        }
    }
    let (start, end) = range.unwrap_or((0, total.saturating_sub(1)));
    let body = if total == 0 {
        Vec::new()
    } else {
        data[start as usize..=end as usize].to_vec()
    };
    let len = body.len() as u64;
    let broken = match cut {
        Some((f, at, mode)) if f == file && start <= at && at <= end => {
            if mode == Cut::Once {
                s.switches.lock().unwrap().cut = None;
            }
            Some((at - start) as usize)
        }
        _ => None,
    };
    let body = match broken {
        Some(n) => {
            use futures_util::StreamExt;
            let first: Result<Vec<u8>, std::io::Error> = Ok(body[..n].to_vec());
            // the error after a pause, so that the bytes before it reach the client first
            let err = futures_util::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                Err::<Vec<u8>, _>(std::io::Error::other("cut off"))
            });
            Body::from_stream(futures_util::stream::iter([first]).chain(err))
        }
        None => Body::from(body),
    };
    let mut r = Response::new(body);
    if range.is_some() {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert("x-repo-commit", HeaderValue::from_str(&commit).unwrap());
    let etag = if lfs {
        hex(&Sha256::digest(&data))
    } else {
        git_blob_sha1(&data)
    };
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{etag}\"")).unwrap(),
    );
    if range.is_some() {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")).unwrap(),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The status line of a raw HTTP/1.1 GET of `path`.
    fn status(server: &HubServer, path: &str) -> String {
        let addr = server.url().trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines().next().unwrap_or_default().to_string()
    }

    #[test]
    fn serves_a_repo_and_refuses_paths_outside_it() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("models/o/r");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("all_config.yaml"), "arch:\n  H_cycles: 2\n").unwrap();
        std::fs::write(root.path().join("secret"), "x").unwrap();
        let server = HubServer::start(root.path());
        assert!(status(&server, "/o/r/resolve/main/all_config.yaml").contains(" 200 "));
        assert!(status(&server, "/api/models/o/r/revision/main").contains(" 200 "));
        assert!(status(&server, "/o/r/resolve/main/missing").contains(" 404 "));
        assert!(status(&server, "/o/r/resolve/v2/all_config.yaml").contains(" 404 "));
        for hostile in [
            "/o/r/resolve/main/../../../secret",
            "/o/r/resolve/main/%2E%2E/secret",
            "/o/r/resolve/..%2F..%2F..%2Fsecret/x",
        ] {
            let s = status(&server, hostile);
            assert!(s.contains(" 400 ") || s.contains(" 404 "), "{hostile}: {s}");
        }
        assert_eq!(server.count("GET /o/r/resolve/"), 6);
        server.require_token(Some("t"));
        assert!(status(&server, "/api/models/o/r/revision/main").contains(" 401 "));
        server.stop();
    }
}
