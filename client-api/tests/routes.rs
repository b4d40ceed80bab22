//! Every handler and extractor of the client API through `Router::oneshot`, over a fake node:
//! what a client sends, what the node is asked, and what the client gets back (status, JSON
//! error body naming the problem), without sockets or a store.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use kith_client_api::{
    ApiState, Caller, ChatService, Completion, OutgoingMessage, Password, RateLimitConfig, RateLimits, SendOutcome,
    ServiceError, Session, SessionId, TokenKeys, WsConfig, route_paths, router,
};
use kith_proto::keys::{KeyBundles, KeyCount, KeyUpload};
use kith_proto::rest::HistoryPage;
use kith_proto::{
    DeviceId, ErrorBody, ErrorCode, ErrorDetail, IncomingMessage, MessageId, MessageStatus, PresenceStatus,
    PresenceView, ServerName, Timestamp, UserId, Username,
};
use serde_json::{Value, json};
use tower::ServiceExt;

/// What the fake node was asked.
#[derive(Debug, Default)]
struct Asked {
    sends: Vec<(Caller, OutgoingMessage)>,
    histories: Vec<(UserId, UserId, Option<MessageId>, u32)>,
    removed: Vec<(Caller, DeviceId)>,
}

/// A node that answers from a script: `bob` exists, `taken` is taken, alice's password is
/// `correct horse battery`, device 9 was removed, and readiness is a switch.
#[derive(Debug)]
struct FakeNode {
    name: ServerName,
    asked: Mutex<Asked>,
    ready: Mutex<bool>,
}

fn user(name: &str) -> UserId {
    UserId::parse(&format!("{name}@test")).unwrap_or_else(|e| panic!("{e}"))
}

fn not_here<T>() -> Result<T, ServiceError> {
    Err(ServiceError::Internal("not part of this test".into()))
}

#[async_trait]
impl ChatService for FakeNode {
    fn server_name(&self) -> &ServerName {
        &self.name
    }
    async fn register(&self, username: Username, _: Password, _: DeviceId) -> Result<UserId, ServiceError> {
        if username.as_str() == "taken" {
            return Err(ServiceError::UsernameTaken(username));
        }
        Ok(UserId::new(username, self.name.clone()))
    }
    async fn login(&self, username: Username, password: Password, _: DeviceId) -> Result<UserId, ServiceError> {
        if username.as_str() == "alice" && password.expose() == "correct horse battery" {
            Ok(user("alice"))
        } else {
            Err(ServiceError::InvalidCredentials)
        }
    }
    async fn send(&self, caller: &Caller, message: OutgoingMessage) -> Result<Completion<SendOutcome>, ServiceError> {
        if message.receiver != user("bob") {
            return Err(ServiceError::UnknownUser(message.receiver));
        }
        let duplicate = message.client_message_id.as_ref().is_some_and(|c| c.as_str() == "seen-before");
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).sends.push((caller.clone(), message));
        let outcome = SendOutcome { message_id: MessageId::now(), timestamp: Timestamp::now(), duplicate };
        Ok(Box::pin(async move { Ok(outcome) }))
    }
    async fn history(
        &self,
        caller: &UserId,
        peer: &UserId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<HistoryPage, ServiceError> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).histories.push((
            caller.clone(),
            peer.clone(),
            before,
            limit,
        ));
        Ok(HistoryPage { messages: Vec::new(), next_before: None })
    }
    async fn presence_visibility(&self, _: &UserId) -> Result<kith_proto::PresenceVisibility, ServiceError> {
        Ok(kith_proto::PresenceVisibility::Contacts)
    }
    async fn set_presence_visibility(&self, _: &UserId, _: kith_proto::PresenceVisibility) -> Result<(), ServiceError> {
        Ok(())
    }
    async fn presence(&self, _viewer: &UserId, who: &UserId) -> Result<PresenceView, ServiceError> {
        if *who == user("bob") {
            Ok(PresenceView { user_id: who.clone(), status: PresenceStatus::Online, last_seen: None })
        } else {
            Err(ServiceError::UnknownUser(who.clone()))
        }
    }
    async fn open_session(&self, _: &Caller) -> Result<Session, ServiceError> {
        not_here()
    }
    async fn pending(&self, _: &Caller, _: i64, _: u32) -> Result<Vec<(i64, IncomingMessage)>, ServiceError> {
        Ok(Vec::new())
    }
    async fn receipt(&self, _: &Caller, _: MessageId, _: MessageStatus) -> Result<Completion<()>, ServiceError> {
        not_here()
    }
    async fn subscribe_presence(&self, _: SessionId, _: Vec<UserId>) -> Result<Vec<PresenceView>, ServiceError> {
        not_here()
    }
    async fn publish_keys(&self, _: &Caller, _: KeyUpload) -> Result<KeyCount, ServiceError> {
        not_here()
    }
    async fn claim_keys(&self, _: &Caller, who: &UserId) -> Result<KeyBundles, ServiceError> {
        Err(ServiceError::UnknownUser(who.clone()))
    }
    async fn device_keys(&self, _: &Caller, who: &UserId) -> Result<KeyBundles, ServiceError> {
        Ok(KeyBundles { user_id: who.clone(), user_identity: None, devices: Vec::new(), removals: Vec::new() })
    }
    async fn publish_removal(&self, _: &Caller, _: kith_proto::keys::RemovalUpload) -> Result<(), ServiceError> {
        Err(ServiceError::Internal("not part of this test".into()))
    }
    async fn key_count(&self, caller: &Caller) -> Result<KeyCount, ServiceError> {
        Ok(KeyCount { device_id: caller.device, one_time_pre_keys: 42 })
    }
    async fn remove_device(&self, caller: &Caller, device: DeviceId) -> Result<(), ServiceError> {
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).removed.push((caller.clone(), device));
        Ok(())
    }
    async fn check_device(&self, caller: &Caller) -> Result<(), ServiceError> {
        if caller.device == DeviceId(9) {
            Err(ServiceError::UnknownDevice(caller.user.clone(), caller.device))
        } else {
            Ok(())
        }
    }
    async fn ready(&self) -> Result<(), ServiceError> {
        if *self.ready.lock().unwrap_or_else(|e| e.into_inner()) {
            Ok(())
        } else {
            Err(ServiceError::Unavailable("the store does not answer".into()))
        }
    }
}

/// The router over a fake node, with the keys it signs tokens with.
struct Api {
    node: Arc<FakeNode>,
    tokens: Arc<TokenKeys>,
    state: ApiState,
}

impl Api {
    fn new() -> Self {
        let name = ServerName::parse("test").unwrap_or_else(|e| panic!("{e}"));
        let node = Arc::new(FakeNode { name: name.clone(), asked: Mutex::default(), ready: Mutex::new(true) });
        let tokens = Arc::new(TokenKeys::new(&[7; 32], name, Duration::from_secs(3600)));
        let state = ApiState {
            service: node.clone(),
            tokens: tokens.clone(),
            limits: Arc::new(RateLimits::new(RateLimitConfig::default())),
            ws: WsConfig::default(),
            shutdown: Default::default(),
            connections: Default::default(),
            connection_slots: Arc::new(tokio::sync::Semaphore::new(10)),
            origins: Default::default(),
        };
        Self { node, tokens, state }
    }

    /// A token for `name`'s device `device`.
    fn token(&self, name: &str, device: u32) -> String {
        self.tokens.issue(&Caller { user: user(name), device: DeviceId(device) }).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// Sends one request; returns the status and the body as JSON (`Null` when empty).
    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.raw(request.body(body).unwrap_or_else(|e| panic!("{e}"))).await
    }

    async fn raw(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = router(self.state.clone()).oneshot(request).await.unwrap_or_else(|e| match e {});
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap_or_else(|e| panic!("{e}"));
        let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        (status, json)
    }
}

/// The error body, checked to be one: a code and a message.
fn error(body: &Value) -> ErrorDetail {
    let body: ErrorBody =
        serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("not an error body ({e}): {body}"));
    body.error
}

#[tokio::test]
async fn register_answers_201_with_a_token_of_the_new_user_and_names_what_is_wrong() {
    let api = Api::new();
    let (status, body) = api
        .call(Method::POST, "/api/v1/register", None, Some(json!({"username": "carol", "password": "long enough"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["userId"], "carol@test");
    let token = body["token"].as_str().unwrap_or_default();
    assert_eq!(api.tokens.verify(token).map(|c| c.user).ok(), Some(user("carol")), "a token for carol");

    let (status, body) = api
        .call(Method::POST, "/api/v1/register", None, Some(json!({"username": "taken", "password": "long enough"})))
        .await;
    assert_eq!((status, error(&body).code), (StatusCode::CONFLICT, ErrorCode::UsernameTaken));

    let (status, body) =
        api.call(Method::POST, "/api/v1/register", None, Some(json!({"username": "carol", "password": "short"}))).await;
    let e = error(&body);
    assert_eq!((status, e.code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest));
    assert!(e.message.contains("password must be 8 to 256 characters"), "{}", e.message);

    let (status, body) = api
        .call(
            Method::POST,
            "/api/v1/register",
            None,
            Some(json!({"username": "Not Valid!", "password": "long enough"})),
        )
        .await;
    assert_eq!((status, error(&body).code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest));

    // Not JSON, or JSON of the wrong shape: our error format, not the framework's text.
    let request = Request::post("/api/v1/register")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = api.raw(request).await;
    assert_eq!((status, error(&body).code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidJson));
    let (status, body) = api.call(Method::POST, "/api/v1/register", None, Some(json!({"username": 7}))).await;
    assert_eq!((status, error(&body).code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidJson));
}

#[tokio::test]
async fn login_gives_the_same_answer_for_a_wrong_password_and_a_malformed_username() {
    let api = Api::new();
    let login = |username: &str, password: &str| {
        api.call(Method::POST, "/api/v1/login", None, Some(json!({"username": username, "password": password})))
    };
    let (status, body) = login("alice", "correct horse battery").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["userId"], "alice@test");
    for (username, password) in [("alice", "wrong password"), ("No Such User!", "correct horse battery")] {
        let (status, body) = login(username, password).await;
        assert_eq!((status, error(&body).code), (StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials));
    }
}

#[tokio::test]
async fn the_token_extractor_refuses_every_way_a_token_can_be_wrong() {
    let api = Api::new();
    let count = |token: Option<String>| {
        let mut request = Request::get("/api/v1/keys/count");
        if let Some(value) = token {
            request = request.header(header::AUTHORIZATION, value);
        }
        api.raw(request.body(Body::empty()).unwrap_or_else(|e| panic!("{e}")))
    };
    let (status, body) = count(Some(format!("Bearer {}", api.token("alice", 0)))).await;
    assert_eq!((status, body["oneTimePreKeys"].as_u64()), (StatusCode::OK, Some(42)));

    let (status, body) = count(None).await;
    assert_eq!((status, error(&body).code), (StatusCode::UNAUTHORIZED, ErrorCode::MissingToken));
    for wrong in ["Basic YWxpY2U6cHc=".to_owned(), "Bearer".to_owned(), "Bearer not.a.jwt".to_owned()] {
        let (status, body) = count(Some(wrong.clone())).await;
        assert_eq!((status, error(&body).code), (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken), "{wrong}");
    }
    // Signed by another key, or issued by another server.
    let other =
        TokenKeys::new(&[8; 32], ServerName::parse("test").unwrap_or_else(|e| panic!("{e}")), Duration::from_secs(60));
    let forged = other.issue(&Caller { user: user("alice"), device: DeviceId(0) }).unwrap_or_else(|e| panic!("{e:?}"));
    let (status, body) = count(Some(format!("Bearer {forged}"))).await;
    let e = error(&body);
    assert_eq!((status, e.code), (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken));
    assert!(e.message.contains("signature"), "{}", e.message);
    let elsewhere =
        TokenKeys::new(&[7; 32], ServerName::parse("beta").unwrap_or_else(|e| panic!("{e}")), Duration::from_secs(60));
    let theirs = elsewhere
        .issue(&Caller { user: UserId::parse("alice@beta").unwrap_or_else(|e| panic!("{e}")), device: DeviceId(0) })
        .unwrap_or_else(|e| panic!("{e:?}"));
    let (status, body) = count(Some(format!("Bearer {theirs}"))).await;
    assert_eq!((status, error(&body).code), (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken));
    // Expired a minute ago (beyond the leeway), signed with the node's own key.
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": "alice@test", "iss": "test", "iat": now - 3600, "exp": now - 60, "did": 0});
    let old = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&[7; 32]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = count(Some(format!("Bearer {old}"))).await;
    assert_eq!((status, error(&body).code), (StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired));
    // A device removed since its token was issued.
    let (status, body) = count(Some(format!("Bearer {}", api.token("alice", 9)))).await;
    assert_eq!((status, error(&body).code), (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken));
}

#[tokio::test]
async fn send_speaks_only_for_the_caller_and_hands_the_node_a_checked_message() {
    let api = Api::new();
    let token = api.token("alice", 2);
    let send = |body: Value| api.call(Method::POST, "/api/v1/messages", Some(&token), Some(body));

    let (status, body) =
        send(json!({"senderId": "alice", "receiverId": "bob", "message": "hi", "clientMessageId": "c-1"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "sent");
    assert!(body["messageId"].is_string() && body["timestamp"].is_string());
    {
        let asked = api.node.asked.lock().unwrap_or_else(|e| e.into_inner());
        let (caller, message) = asked.sends.last().unwrap_or_else(|| panic!("the node was not asked"));
        assert_eq!((&caller.user, caller.device), (&user("alice"), DeviceId(2)));
        assert_eq!((&message.receiver, message.content.as_str()), (&user("bob"), "hi"));
        assert_eq!(message.client_message_id.as_ref().map(|c| c.as_str()), Some("c-1"));
    }
    // A repeat of a clientMessageId is 200, not 201.
    let (status, _) =
        send(json!({"senderId": "alice", "receiverId": "bob", "message": "hi", "clientMessageId": "seen-before"}))
            .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = send(json!({"senderId": "mallory", "receiverId": "bob", "message": "as someone else"})).await;
    let e = error(&body);
    assert_eq!((status, e.code), (StatusCode::FORBIDDEN, ErrorCode::Forbidden));
    assert!(e.message.contains("senderId"), "{}", e.message);
    let (status, body) = send(json!({"senderId": "alice", "receiverId": "nobody", "message": "hello?"})).await;
    assert_eq!((status, error(&body).code), (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    let (status, body) = send(json!({"senderId": "alice", "receiverId": "bob", "message": "nul \u{0}"})).await;
    assert_eq!((status, error(&body).code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest));
    let (status, body) =
        send(json!({"senderId": "alice", "receiverId": "bob", "message": "x".repeat(65 * 1024)})).await;
    assert!(status.is_client_error(), "{status}");
    assert!(!error(&body).message.is_empty());
    assert_eq!(
        api.node.asked.lock().unwrap_or_else(|e| e.into_inner()).sends.len(),
        2,
        "nothing refused reached the node"
    );
}

#[tokio::test]
async fn history_is_only_of_the_callers_own_conversations_and_checks_its_query() {
    let api = Api::new();
    let token = api.token("alice", 0);
    let (status, body) =
        api.call(Method::GET, "/api/v1/messages?user1=bob&user2=alice&limit=10", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    {
        let asked = api.node.asked.lock().unwrap_or_else(|e| e.into_inner());
        let (caller, peer, before, limit) = asked.histories.last().unwrap_or_else(|| panic!("not asked"));
        assert_eq!((caller, peer, *before, *limit), (&user("alice"), &user("bob"), None, 10));
    }
    // Someone else's conversation answers as one that does not exist: nothing to probe.
    let (status, body) = api.call(Method::GET, "/api/v1/messages?user1=bob&user2=carol", Some(&token), None).await;
    assert_eq!((status, error(&body).code), (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    for query in [
        "user1=alice&user2=bob&limit=0",
        "user1=alice&user2=bob&limit=abc",
        "user1=alice",
        "user1=alice&user2=bob&before=nope",
    ] {
        let (status, body) = api.call(Method::GET, &format!("/api/v1/messages?{query}"), Some(&token), None).await;
        assert_eq!((status, error(&body).code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest), "{query}");
    }
    assert_eq!(api.node.asked.lock().unwrap_or_else(|e| e.into_inner()).histories.len(), 1);
}

#[tokio::test]
async fn presence_keys_and_devices_answer_for_the_right_user() {
    let api = Api::new();
    let token = api.token("alice", 0);
    let (status, body) = api.call(Method::GET, "/api/v1/presence/bob", Some(&token), None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("online")));
    let (status, body) = api.call(Method::GET, "/api/v1/presence/nobody", Some(&token), None).await;
    assert_eq!((status, error(&body).code), (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    let (status, body) = api.call(Method::GET, "/api/v1/keys/nobody", Some(&token), None).await;
    assert_eq!((status, error(&body).code), (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    let (status, body) = api.call(Method::GET, "/api/v1/keys/bob/devices", Some(&token), None).await;
    assert_eq!((status, body["userId"].as_str()), (StatusCode::OK, Some("bob@test")));
    let (status, body) = api.call(Method::GET, "/api/v1/presence/Not%20Valid", Some(&token), None).await;
    assert_eq!((status, error(&body).code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest));

    let (status, _) = api.call(Method::DELETE, "/api/v1/devices/3", Some(&token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let removed = api.node.asked.lock().unwrap_or_else(|e| e.into_inner()).removed.clone();
    assert_eq!(removed.iter().map(|(c, d)| (c.user.clone(), *d)).collect::<Vec<_>>(), [(user("alice"), DeviceId(3))]);
    let (status, body) = api.call(Method::DELETE, "/api/v1/devices/not-a-number", Some(&token), None).await;
    assert_eq!((status, error(&body).code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest));
}

#[tokio::test]
async fn health_readiness_routes_methods_and_body_limits_answer_in_json() {
    let api = Api::new();
    assert_eq!(api.call(Method::GET, "/healthz", None, None).await.0, StatusCode::OK);
    assert_eq!(api.call(Method::GET, "/readyz", None, None).await.0, StatusCode::OK);
    *api.node.ready.lock().unwrap_or_else(|e| e.into_inner()) = false;
    let (status, body) = api.call(Method::GET, "/readyz", None, None).await;
    let e = error(&body);
    assert_eq!((status, e.code), (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable));
    assert_eq!(e.message, "not ready: the store does not answer", "names the part, for the operator");

    let (status, body) = api.call(Method::GET, "/api/v1/nothing-here", None, None).await;
    assert_eq!((status, error(&body).code), (StatusCode::NOT_FOUND, ErrorCode::NotFound));
    let (status, body) = api.call(Method::PATCH, "/api/v1/messages", None, None).await;
    assert_eq!((status, error(&body).code), (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::InvalidRequest));
    let big = json!({"username": "carol", "password": "x".repeat(600 * 1024)});
    let (status, body) = api.call(Method::POST, "/api/v1/register", None, Some(big)).await;
    assert_eq!((status, error(&body).code), (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge));
}

/// A path with its parameters' names left out: `/keys/{userId}` and `/keys/{user_id}` are one.
fn path_shape(path: &str) -> String {
    let mut shape = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                shape.push_str("{}");
            }
            '}' => in_param = false,
            c if !in_param => shape.push(c),
            _ => {}
        }
    }
    shape
}

#[tokio::test]
async fn the_openapi_document_and_the_router_serve_the_same_routes_and_methods() {
    let api = Api::new();
    let (status, doc) = api.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap_or_else(|| panic!("no paths: {doc}"));
    let documented: BTreeSet<String> = paths.keys().map(|p| path_shape(p)).collect();
    let routed: BTreeSet<String> = route_paths().into_iter().map(path_shape).collect();
    assert_eq!(documented, routed, "every route documented, every documented route served");

    // Each path answers exactly the methods the document lists: any other gets the router's 405.
    let token = api.token("alice", 0);
    for (path, operations) in paths {
        let uri = path.replace("{userId}", "bob").replace("{deviceId}", "3");
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let (status, _) = api.call(method.clone(), &uri, Some(&token), None).await;
            let documented = operations.get(method.as_str().to_lowercase()).is_some();
            assert_eq!(status != StatusCode::METHOD_NOT_ALLOWED, documented, "{method} {path}: {status}");
        }
    }
}

#[tokio::test]
async fn every_operation_documents_its_refusals_with_the_error_body() {
    let api = Api::new();
    let (_, doc) = api.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    let paths = doc["paths"].as_object().unwrap_or_else(|| panic!("no paths: {doc}"));
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap_or_else(|| panic!("{path}")) {
            let responses = operation["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}"));
            let has = |status: &str| responses.contains_key(status);
            if operation.get("security").is_some() {
                assert!(has("401"), "{method} {path}: a route behind a token documents 401");
            }
            if operation.get("requestBody").is_some() {
                assert!(has("400") && has("413"), "{method} {path}: a JSON body documents 400 and 413");
            }
            if operation.get("parameters").is_some_and(|p| p.as_array().is_some_and(|p| !p.is_empty())) {
                assert!(has("400"), "{method} {path}: parameters document 400");
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let body = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(body, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                }
            }
        }
    }
}

#[tokio::test]
async fn the_openapi_document_states_the_protocol_limits() {
    use kith_proto::limits::*;
    use kith_proto::patterns;
    let api = Api::new();
    let (_, doc) = api.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    let schemas = &doc["components"]["schemas"];
    let field = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();

    let username = field("Credentials", "username");
    assert_eq!(username["maxLength"], json!(USERNAME_MAX_BYTES));
    assert_eq!(username["minLength"], json!(1));
    assert_eq!(username["pattern"], json!(patterns::username()));
    let password = field("Credentials", "password");
    assert_eq!(
        (password["minLength"].clone(), password["maxLength"].clone()),
        (json!(PASSWORD_MIN_CHARS), json!(PASSWORD_MAX_CHARS))
    );
    assert_eq!(schemas["DeviceId"]["maximum"], json!(u32::MAX));
    assert_eq!(schemas["DeviceId"]["minimum"], json!(0));

    let message = field("SendMessageRequest", "message");
    assert_eq!(message["maxLength"], json!(MAX_MESSAGE_BYTES));
    assert_eq!(message["pattern"], json!(patterns::NO_NUL));
    assert_eq!(field("SendMessageRequest", "clientMessageId")["maxLength"], json!(CLIENT_MESSAGE_ID_MAX_BYTES));
    for side in ["senderId", "receiverId"] {
        assert_eq!(field("SendMessageRequest", side)["pattern"], json!(patterns::user_ref()), "{side}");
    }
    assert_eq!(schemas["UserId"]["pattern"], json!(patterns::user_id()));
    assert_eq!(schemas["MessageId"]["pattern"], json!(patterns::MESSAGE_ID));

    let prekeys = field("KeyUpload", "oneTimePreKeys");
    assert_eq!(prekeys["maxItems"], json!(MAX_PREKEYS_PER_UPLOAD));
    assert_eq!(prekeys["items"]["maxLength"], json!(MAX_KEY_BYTES));
    assert_eq!(field("KeyUpload", "identity")["maxLength"], json!(MAX_KEY_BYTES));
    assert_eq!(field("KeyUpload", "signedPreKey")["maxLength"], json!(MAX_KEY_BYTES));
    assert_eq!(field("KeyUpload", "certificate")["maxLength"], json!(MAX_CERTIFICATE_BYTES));
    assert_eq!(field("RemovalUpload", "removal")["maxLength"], json!(MAX_CERTIFICATE_BYTES));

    let params = doc["paths"]["/api/v1/messages"]["get"]["parameters"].as_array().cloned().unwrap_or_default();
    let param = |name: &str| {
        params.iter().find(|p| p["name"] == name).map(|p| p["schema"].clone()).unwrap_or_else(|| panic!("{name}"))
    };
    let limit = param("limit");
    assert_eq!((limit["minimum"].clone(), limit["maximum"].clone()), (json!(1), json!(HISTORY_MAX_LIMIT)));
    assert_eq!(limit["default"], json!(HISTORY_DEFAULT_LIMIT));
    assert_eq!(param("before")["pattern"], json!(patterns::MESSAGE_ID));
    assert_eq!(param("user1")["pattern"], json!(patterns::user_ref()));
}
