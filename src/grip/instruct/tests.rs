use super::*;
use http::HeaderMap;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn hold(pairs: &[(&str, &str)], body: &str) -> Result<Hold, InstructError> {
    match parse(
        StatusCode::OK,
        &headers(pairs),
        Bytes::from(body.to_owned()),
    )? {
        Instruction::Hold(h) => Ok(h),
        other => panic!("not a hold: {other:?}"),
    }
}

#[test]
fn an_answer_without_grip_headers_is_not_an_instruction() {
    let h = headers(&[("content-type", "text/plain")]);
    assert!(!is_grip(&h));
    assert!(matches!(
        parse(StatusCode::OK, &h, Bytes::new()),
        Ok(Instruction::None)
    ));
}

#[test]
fn channels_repeat_and_list_with_prev_ids() {
    let h = hold(
        &[
            ("grip-hold", "response"),
            ("grip-channel", "a; prev-id=1, b"),
            ("grip-channel", "c; filter=skip-self; prev-id=\"x y\""),
            ("grip-timeout", "20"),
        ],
        "{}",
    )
    .unwrap();
    let got: Vec<(&str, Option<&str>)> = h
        .channels
        .iter()
        .map(|c| (c.name.as_str(), c.prev_id.as_deref()))
        .collect();
    assert_eq!(got, [("a", Some("1")), ("b", None), ("c", Some("x y"))]);
    assert_eq!((h.mode, h.timeout), (Mode::Response, Some(20)));
}

#[test]
fn the_held_answer_loses_grip_and_framing_headers_and_takes_grip_status() {
    let h = hold(
        &[
            ("grip-hold", "response"),
            ("grip-channel", "a"),
            ("grip-status", "404 Not Here"),
            ("content-length", "2"),
            ("content-type", "application/json"),
            ("x-app", "1"),
        ],
        "{}",
    )
    .unwrap();
    assert_eq!(h.response.status, StatusCode::NOT_FOUND);
    assert_eq!(h.response.reason.as_deref(), Some("Not Here"));
    let names: Vec<&str> = h.response.headers.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["content-type", "x-app"]);
    assert_eq!(&h.response.body[..], b"{}");
}

#[test]
fn expose_headers_is_an_allow_list() {
    let h = hold(
        &[
            ("grip-hold", "response"),
            ("grip-channel", "a"),
            ("grip-expose-headers", "X-Keep"),
            ("x-keep", "1"),
            ("x-drop", "2"),
        ],
        "",
    )
    .unwrap();
    let names: Vec<&str> = h.response.headers.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["x-keep"]);
}

#[test]
fn keep_alive_formats_and_bounds() {
    let h = hold(
        &[
            ("grip-hold", "stream"),
            ("grip-channel", "a"),
            ("grip-keep-alive", "\\n; format=cstring; timeout=0"),
        ],
        "",
    )
    .unwrap();
    let k = h.keep_alive.unwrap();
    assert_eq!(
        (&k.data[..], k.every, k.interval),
        (&b"\n"[..], Duration::from_secs(1), false)
    );
    let h = hold(
        &[
            ("grip-hold", "stream"),
            ("grip-channel", "a"),
            ("grip-keep-alive", "aGk=; format=base64; mode=interval"),
        ],
        "",
    )
    .unwrap();
    let k = h.keep_alive.unwrap();
    assert_eq!(
        (&k.data[..], k.every, k.interval),
        (&b"hi"[..], GRIP_KEEP_ALIVE, true)
    );
}

#[test]
fn the_json_form_says_the_same() {
    let body = r#"{"hold": {"mode": "stream", "channels": [{"name": "a", "prev-id": "3"}],
        "timeout": 9, "keep-alive": {"content": "ka", "timeout": 4}},
        "response": {"code": 201, "headers": {"Content-Type": "text/plain", "Grip-X": "1"}, "body": "start"}}"#;
    let parsed = parse(
        StatusCode::OK,
        &headers(&[("content-type", "application/grip-instruct")]),
        Bytes::from(body),
    )
    .unwrap();
    let Instruction::Hold(h) = parsed else {
        panic!("not a hold");
    };
    assert_eq!((h.mode, h.timeout), (Mode::Stream, Some(9)));
    assert_eq!(h.channels[0].prev_id.as_deref(), Some("3"));
    assert_eq!(h.response.status, StatusCode::CREATED);
    assert!(h.response.headers.get("grip-x").is_none());
    assert_eq!(&h.response.body[..], b"start");
    assert_eq!(h.keep_alive.unwrap().every, Duration::from_secs(4));
    // Without `hold`: just a response.
    let parsed = parse(
        StatusCode::OK,
        &headers(&[("content-type", "application/grip-instruct")]),
        Bytes::from(r#"{"response": {"body": "now"}}"#),
    )
    .unwrap();
    assert!(matches!(parsed, Instruction::Respond(r) if &r.body[..] == b"now"));
}

#[test]
fn mistakes_are_named() {
    for (pairs, says) in [
        (
            vec![("grip-hold", "forever"), ("grip-channel", "a")],
            "Grip-Hold",
        ),
        (vec![("grip-hold", "response")], "at least one channel"),
        (
            vec![("grip-hold", "response"), ("grip-channel", "a, a")],
            "twice",
        ),
        (
            vec![("grip-hold", "response"), ("grip-channel", "a b")],
            "Grip-Channel",
        ),
        (
            vec![
                ("grip-hold", "response"),
                ("grip-channel", "a"),
                ("grip-timeout", "-1"),
            ],
            "Grip-Timeout",
        ),
        (
            vec![
                ("grip-hold", "response"),
                ("grip-channel", "a"),
                ("grip-status", "abc"),
            ],
            "Grip-Status",
        ),
        (
            vec![
                ("grip-hold", "stream"),
                ("grip-channel", "a"),
                ("grip-keep-alive", "; timeout=5"),
            ],
            "empty",
        ),
        (
            vec![
                ("grip-hold", "stream"),
                ("grip-channel", "a"),
                ("grip-keep-alive", "x; format=rot13"),
            ],
            "format",
        ),
    ] {
        let e = hold(&pairs, "").unwrap_err();
        assert!(e.0.contains(says), "{pairs:?}: {e}");
    }
    let many: String = (0..=GRIP_MAX_CHANNELS).map(|i| format!("c{i},")).collect();
    let e = hold(&[("grip-hold", "response"), ("grip-channel", &many)], "").unwrap_err();
    assert!(e.0.contains("at most"), "{e}");
    let e = parse(
        StatusCode::NOT_FOUND,
        &headers(&[("content-type", "application/grip-instruct")]),
        Bytes::from("{}"),
    )
    .unwrap_err();
    assert!(e.0.contains("200"), "{e}");
}
