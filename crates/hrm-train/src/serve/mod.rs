//! `hrm serve`: a local web app (axum) that solves Sudokus, mazes and the ARC tasks of a dataset
//! with loaded models and shows every segment's answer, the halting and the verdict; the models
//! are shared read-only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use candle_core::Device;
use serde::Deserialize;
use serde_json::json;

use crate::checkpoints::{default_model, MAZE_MODEL, SUDOKU_MODEL};
use crate::solve::{ArcDataset, ArcModel, GridKind, GridModel, GridPuzzle};

/// The largest request body accepted (a 30x30 maze is under 1 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The most segments one request may ask for.
pub const MAX_SEGMENTS: usize = 64;
/// The routes, as the 404 of an unknown one lists them.
const ROUTES: &str = "GET /, GET /api/info, GET /api/maze/random?seed=N, POST /api/solve";

/// Rows per batch of an ARC model (test inputs x variants).
const ARC_BATCH: usize = 32;

/// The models a server solves with, one per task, each shared read-only by every request.
#[derive(Debug)]
pub struct Models {
    sudoku: Option<GridModel>,
    maze: Option<GridModel>,
    arc: Option<(ArcModel, ArcDataset)>,
}

impl Models {
    /// Load `checkpoints` (model files; each one's task is read from its vocabulary) on `device`;
    /// a Sudoku or maze task none of them covers gets its shipped model where one is found. An
    /// ARC model needs `data`, the dataset it was trained on, whose test split lists the tasks.
    pub fn load(
        checkpoints: &[PathBuf],
        data: Option<&Path>,
        device: &Device,
        bf16: bool,
    ) -> Result<Models> {
        let mut m = Models {
            sudoku: None,
            maze: None,
            arc: None,
        };
        for file in checkpoints {
            let model = GridModel::load(file, device, bf16)?;
            let c = &model.loaded.model.cfg;
            if ArcModel::is_arc(c) {
                if let Some((other, _)) = &m.arc {
                    bail!(
                        "{} and {} are both ARC models: pass one --checkpoint per task",
                        other.path.display(),
                        file.display()
                    );
                }
                let data = data.with_context(|| {
                    format!(
                        "{}: an ARC model needs --data DIR, the dataset it was trained on",
                        file.display()
                    )
                })?;
                let dataset = ArcDataset::load(data)?;
                let arc = ArcModel::load(file, device, bf16, ARC_BATCH)?;
                arc.check(&dataset.identifiers, &data.join("identifiers.json"))?;
                m.arc = Some((arc, dataset));
                continue;
            }
            let Some((kind, _)) = model.kind() else {
                bail!(
                    "{}: a model with vocab_size {} and seq_len {} is no Sudoku model (vocab \
                     11, seq_len 81), maze model (vocab 6, seq_len N*N) or ARC model (vocab 12, \
                     seq_len 900)",
                    file.display(),
                    c.vocab_size,
                    c.seq_len
                );
            };
            let slot = m.slot(kind);
            if let Some(other) = slot {
                bail!(
                    "{} and {} are both {} models: pass one --checkpoint per task",
                    other.path.display(),
                    file.display(),
                    kind.name()
                );
            }
            *slot = Some(model);
        }
        for (kind, name) in [
            (GridKind::Sudoku, SUDOKU_MODEL),
            (GridKind::Maze, MAZE_MODEL),
        ] {
            if m.slot(kind).is_none() {
                if let Ok(file) = default_model(name) {
                    *m.slot(kind) = Some(GridModel::load(&file, device, bf16)?);
                }
            }
        }
        if let (Some(d), None) = (data, &m.arc) {
            bail!(
                "--data {}: the dataset is for an ARC model, and no --checkpoint is one",
                d.display()
            );
        }
        if m.sudoku.is_none() && m.maze.is_none() && m.arc.is_none() {
            bail!("no model to serve: pass --checkpoint CKPT (a Sudoku, maze or ARC model)");
        }
        Ok(m)
    }

    fn slot(&mut self, kind: GridKind) -> &mut Option<GridModel> {
        match kind {
            GridKind::Sudoku => &mut self.sudoku,
            GridKind::Maze => &mut self.maze,
        }
    }

    /// The model of `kind`, if loaded.
    pub fn get(&self, kind: GridKind) -> Option<&GridModel> {
        match kind {
            GridKind::Sudoku => self.sudoku.as_ref(),
            GridKind::Maze => self.maze.as_ref(),
        }
    }

    /// The loaded tasks with their model files.
    pub fn loaded(&self) -> Vec<(&'static str, &Path)> {
        let grids = [GridKind::Sudoku, GridKind::Maze]
            .into_iter()
            .filter_map(|k| self.get(k).map(|m| (k.name(), m.path.as_path())));
        let arc = self.arc.iter().map(|(m, _)| ("arc", m.path.as_path()));
        grids.chain(arc).collect()
    }
}

/// A refused or failed request: its status and a one-line message, sent as `{"error": ...}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError(
                status,
                format!("request body over the {MAX_BODY_BYTES}-byte limit"),
            );
        }
        ApiError(status, format!("request body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad(format!("query string: {}", r.body_text()))
    }
}

/// `POST /api/solve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SolveRequest {
    /// `sudoku`, `maze` or `arc`.
    task: String,
    /// Sudoku: 81 characters, digits and `.` or `0`; maze: its rows, one per line; ARC: a task
    /// id of the dataset's test split.
    puzzle: String,
    /// Segments to run (default: the model's `halt_max_steps`).
    segments: Option<usize>,
}

/// `GET /api/maze/random`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RandomQuery {
    seed: Option<u64>,
}

struct AppState {
    models: Models,
    page: String,
}

type Shared = State<Arc<AppState>>;

fn not_loaded(task: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no {task} model is loaded (hint: hrm serve --checkpoint CKPT)"),
    )
}

impl AppState {
    fn model(&self, task: &str) -> Result<&GridModel, ApiError> {
        let kind = match task {
            "sudoku" => GridKind::Sudoku,
            "maze" => GridKind::Maze,
            _ => {
                return Err(ApiError::bad(format!(
                    "unknown task `{task}`: the tasks are `sudoku`, `maze` and `arc`"
                )))
            }
        };
        self.models.get(kind).ok_or_else(|| not_loaded(task))
    }

    fn arc(&self) -> Result<&(ArcModel, ArcDataset), ApiError> {
        self.models.arc.as_ref().ok_or_else(|| not_loaded("arc"))
    }
}

async fn page(State(s): Shared) -> Html<String> {
    Html(s.page.clone())
}

async fn info(State(s): Shared) -> Json<serde_json::Value> {
    let mut tasks: serde_json::Map<String, serde_json::Value> = [GridKind::Sudoku, GridKind::Maze]
        .into_iter()
        .filter_map(|kind| {
            let m = s.models.get(kind)?;
            let side = m.kind().map_or(0, |(_, side)| side);
            let v = json!({
                "checkpoint": m.path.display().to_string(),
                "side": side,
                "segments": m.default_segments(),
            });
            Some((kind.name().to_string(), v))
        })
        .collect();
    if let Some((m, d)) = &s.models.arc {
        let v = json!({
            "checkpoint": m.path.display().to_string(),
            "segments": m.loaded.model.cfg.halt_max_steps,
            "data": d.dir.display().to_string(),
            "tasks": d.task_ids(),
        });
        tasks.insert("arc".to_string(), v);
    }
    Json(json!({ "tasks": tasks, "max_segments": MAX_SEGMENTS }))
}

/// Run `f` on the blocking pool (model work must not stall the async workers).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("worker: {e}")))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))
}

async fn random_maze(
    State(s): Shared,
    q: Result<Query<RandomQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q?;
    let side = s.model("maze")?.kind().map_or(0, |(_, side)| side);
    let seed = q.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let text = blocking(move || {
        let p = GridPuzzle::random_maze(side, seed)?;
        Ok(p.input_rows().join("\n"))
    })
    .await?;
    Ok(Json(json!({ "maze": text, "seed": seed, "side": side })))
}

async fn solve(
    State(s): Shared,
    body: Result<Json<SolveRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body?;
    if let Some(n) = req.segments {
        if !(1..=MAX_SEGMENTS).contains(&n) {
            return Err(ApiError::bad(format!(
                "segments: {n} is outside 1..={MAX_SEGMENTS}"
            )));
        }
    }
    if req.task == "arc" {
        let task = s
            .arc()?
            .1
            .task(&req.puzzle)
            .map_err(|e| ApiError::bad(format!("{e:#}")))?;
        let state = Arc::clone(&s);
        let report = blocking(move || {
            let (model, _) = state.arc().map_err(|e| anyhow::anyhow!(e.1))?;
            let solution = model.solve(&task, req.segments)?;
            Ok(serde_json::to_value(solution.report(&task, &model.path))?)
        })
        .await?;
        return Ok(Json(report));
    }
    let model = s.model(&req.task)?;
    let puzzle = match req.task.as_str() {
        "sudoku" => GridPuzzle::sudoku(&req.puzzle),
        _ => GridPuzzle::maze(&req.puzzle).map_err(|e| anyhow::anyhow!("maze puzzle: {e}")),
    }
    .map_err(|e| ApiError::bad(format!("{e:#}")))?;
    let side = model.kind().map_or(0, |(_, side)| side);
    if puzzle.side != side {
        return Err(ApiError::bad(format!(
            "{} puzzle: the grid is {n}x{n}, but the model {} solves {side}x{side}",
            req.task,
            model.path.display(),
            n = puzzle.side
        )));
    }
    let state = Arc::clone(&s);
    let segments = req.segments;
    let report = blocking(move || {
        let model = state.model(&req.task).map_err(|e| anyhow::anyhow!(e.1))?;
        let solution = model.solve(&puzzle, segments)?;
        Ok(serde_json::to_value(solution.report(&puzzle, &model.path))?)
    })
    .await?;
    Ok(Json(report))
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no route {method} {}; the routes are {ROUTES}", uri.path()),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; the routes are {ROUTES}",
            uri.path()
        ),
    )
}

/// The app's routes over `models`.
pub fn router(models: Models) -> Router {
    let state = Arc::new(AppState {
        models,
        page: crate::view::app_page(),
    });
    Router::new()
        .route("/", get(page))
        .route("/api/info", get(info))
        .route("/api/maze/random", get(random_maze))
        .route("/api/solve", post(solve))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serve `models` on `host:port` (port 0: any free one) until the process ends; `listening` is
/// told the bound address first.
pub fn serve(
    models: Models,
    host: &str,
    port: u16,
    listening: impl FnOnce(SocketAddr),
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((host, port))
            .await
            .with_context(|| format!("binding {host}:{port}"))?;
        listening(listener.local_addr()?);
        axum::serve(listener, router(models))
            .await
            .context("serving")
    })
}
