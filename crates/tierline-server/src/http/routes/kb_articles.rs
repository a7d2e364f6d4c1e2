//! `GET/POST /v1/kb/articles`, `GET/PUT/DELETE /v1/kb/articles/{id}`: edit the knowledge base
//! while it serves. Each change rebuilds the index off the request thread and switches it in
//! atomically; searches running meanwhile see the old index.

use axum::Extension;
use tierline_support::store::AuditAction;

use crate::http::api::*;
use crate::http::auth::{audit, Caller};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::kb::kb;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::state::AppState;
use tierline_support::kb::{article, Article, Upserted};

impl ArticleInput {
    fn into_article(self, id: String) -> Article {
        Article {
            id,
            title: self.title,
            url: self.url,
            tags: self.tags,
            product: self.product,
            audience: self.audience,
            updated: self.updated,
            body: self.body,
        }
    }
}

/// Every indexed article: id, title, audience, url, updated.
#[utoipa::path(get, path = "/v1/kb/articles", tag = "knowledge base", responses((status = 200, body = ArticleList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<ArticleList>, ApiError> {
    let index = kb(&state)?.current();
    let articles = index
        .articles()
        .iter()
        .map(|a| ArticleSummary {
            id: a.id.clone(),
            title: a.title.clone(),
            audience: a.audience,
            url: a.url.clone(),
            updated: a.updated.clone(),
        })
        .collect();
    Ok(Json(ArticleList { articles }))
}

/// One article and its passage count.
#[utoipa::path(
    get,
    path = "/v1/kb/articles/{id}",
    tag = "knowledge base",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = ArticleResponse),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ArticleResponse>, ApiError> {
    let index = kb(&state)?.current();
    let article = index.article(&id).ok_or_else(|| not_found(&id))?;
    let passages = index.passages().iter().filter(|p| p.article_id == id).count();
    Ok(Json(ArticleResponse { article: article.clone(), passages }))
}

/// Adds an article (id derived from the title when absent) and switches the rebuilt index in.
#[utoipa::path(
    post,
    path = "/v1/kb/articles",
    tag = "knowledge base",
    request_body = ArticleInput,
    responses(
        (status = 201, body = ArticleResponse),
        (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(input): ApiJson<ArticleInput>,
) -> Result<(StatusCode, Json<ArticleResponse>), ApiError> {
    let id = input.id.clone().unwrap_or_else(|| article::slug(&input.title));
    let article = checked(&state, input.into_article(id))?;
    if kb(&state)?.current().article(&article.id).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!("an article with id `{}` exists; PUT /v1/kb/articles/{} replaces it", article.id, article.id),
        )
        .with_field("id"));
    }
    let id = article.id.clone();
    let (_, response) = store(&state, article).await?;
    audit(&state, &caller, AuditAction::ArticleCreated, &id, serde_json::json!({})).await;
    Ok((StatusCode::CREATED, response))
}

/// Adds or replaces the article with this id.
#[utoipa::path(
    put,
    path = "/v1/kb/articles/{id}",
    tag = "knowledge base",
    params(("id" = String, Path)),
    request_body = ArticleInput,
    responses(
        (status = 200, body = ArticleResponse),
        (status = 201, body = ArticleResponse),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<ArticleInput>,
) -> Result<(StatusCode, Json<ArticleResponse>), ApiError> {
    if input.id.as_ref().is_some_and(|body_id| body_id != &id) {
        return Err(ApiError::invalid("id", "`id` in the body differs from the id in the path"));
    }
    let article = checked(&state, input.into_article(id.clone()))?;
    let (outcome, response) = store(&state, article).await?;
    let action = if outcome == Upserted::Created { AuditAction::ArticleCreated } else { AuditAction::ArticleReplaced };
    audit(&state, &caller, action, &id, serde_json::json!({})).await;
    let status = if outcome == Upserted::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, response))
}

/// Removes an article from the knowledge base.
#[utoipa::path(
    delete,
    path = "/v1/kb/articles/{id}",
    tag = "knowledge base",
    params(("id" = String, Path)),
    responses(
        (status = 204),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let state_for_task = state.clone();
    let removed = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || kb(&state_for_task).map(|kb| kb.remove(&id)))
            .await
            .map_err(|err| ApiError::from_kb(err.into()))??
            .map_err(ApiError::from_kb)?
    };
    if !removed {
        return Err(not_found(&id));
    }
    audit(&state, &caller, AuditAction::ArticleRemoved, &id, serde_json::json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

fn checked(state: &AppState, article: Article) -> Result<Article, ApiError> {
    article.validate().map_err(|(field, message)| ApiError::invalid(field, message))?;
    let limit = state.limits().max_article_chars;
    if tierline_support::text::char_len(&article.body) > limit {
        return Err(ApiError::too_large(
            "body",
            format!("`body` is longer than {limit} characters (server.max_article_chars)"),
        ));
    }
    Ok(article)
}

async fn store(state: &AppState, article: Article) -> Result<(Upserted, Json<ArticleResponse>), ApiError> {
    let task_state = state.clone();
    let stored = article.clone();
    let outcome = tokio::task::spawn_blocking(move || kb(&task_state).map(|kb| kb.upsert(stored)))
        .await
        .map_err(|err| ApiError::from_kb(err.into()))??
        .map_err(ApiError::from_kb)?;
    let index = kb(state)?.current();
    let passages = index.passages().iter().filter(|p| p.article_id == article.id).count();
    Ok((outcome, Json(ArticleResponse { article, passages })))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no article with id `{id}`")).with_field("id")
}
