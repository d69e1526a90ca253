//! The mocked host itself: requests reach the component as the real host
//! passes them, failures read clearly.

use std::panic::{AssertUnwindSafe, catch_unwind};
use testkit::{FakeDb, InvokeError, MockHost, TestRequest};

fn fixtures() -> MockHost {
    MockHost::new(testkit::component_path("fixtures"), FakeDb::scripted())
}

/// The message of the panic `f` raises.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("it panics");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn the_component_sees_the_request_as_the_host_would_pass_it() {
    let host = fixtures();
    let r = host.send(
        TestRequest::post("/fixture/describe?q=a%3Ab&q=2&empty=")
            .header("X-Trace", "t1")
            .principal("user-1", &["ws-1", "ws-2"])
            .body("hello"),
    );
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/fixture/describe");
    assert_eq!(
        echo["query"],
        serde_json::json!([["q", "a:b"], ["q", "2"], ["empty", ""]])
    );
    assert_eq!(echo["bodyLength"], 5);
    assert_eq!(echo["principal"]["userId"], "user-1");
    assert_eq!(
        echo["principal"]["workspaceIds"],
        serde_json::json!(["ws-1", "ws-2"])
    );
    assert!(
        echo["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == &serde_json::json!(["x-trace", "t1"]))
    );
}

#[test]
fn a_trap_is_an_error_from_try_send_and_a_clear_panic_from_send() {
    let host = fixtures();
    assert!(matches!(
        host.try_send(TestRequest::get("/fixture/trap")),
        Err(InvokeError::Trap(_))
    ));
    let message = panic_message(|| {
        host.get("/fixture/trap");
    });
    assert!(
        message.starts_with("GET /fixture/trap: component trapped"),
        "{message}"
    );
    // The next request is served by a fresh instance.
    assert_eq!(host.get("/fixture/echo").status, 200);
}

#[test]
fn an_unexpected_statement_fails_the_test_naming_it_and_its_parameters() {
    let host = MockHost::new(testkit::component_path("marketplace"), FakeDb::scripted());
    let message = panic_message(|| {
        host.get("/api/marketplace/agents/agent-000042");
    });
    assert!(
        message.starts_with("GET /api/marketplace/agents/agent-000042: unexpected statement"),
        "{message}"
    );
    assert!(
        message.contains("FROM agents a JOIN categories c"),
        "{message}"
    );
    assert!(message.contains("Text(\"agent-000042\")"), "{message}");
}

#[test]
fn a_missing_component_says_how_to_build_it() {
    let message = panic_message(|| {
        MockHost::new(
            testkit::component_path("no-such-component"),
            FakeDb::scripted(),
        );
    });
    assert!(message.contains("no_such_component.wasm"), "{message}");
    assert!(message.contains("cargo xtask components"), "{message}");
}
