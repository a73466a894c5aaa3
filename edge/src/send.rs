//! Sending one text to many sockets.
//!
//! `WebSocket::send_with_str` hands the Rust string to JavaScript on every call, so a frame for a
//! thousand members was decoded from UTF-8 into a JS string a thousand times. [`js_text`] makes the JS
//! string once and [`send_to_all`] passes the same value to every socket's `send` (a flush that goes out in
//! chunks keeps the one value until its last chunk).

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::WebSocket;

#[wasm_bindgen]
extern "C" {
    /// A WebSocket seen only through its `send` method.
    type Sender;
    /// `WebSocket.prototype.send` with an already-made JS value (a string: a text frame).
    #[wasm_bindgen(method, catch, js_name = send)]
    fn send_value(this: &Sender, data: &JsValue) -> Result<(), JsValue>;
}

/// `text` as a JavaScript string, to send to many sockets.
pub(crate) fn js_text(text: &str) -> JsValue {
    JsValue::from_str(text)
}

/// Sends `text` (a JavaScript string, [`js_text`]) as a text frame to every socket. A failed send means that
/// socket is closing; its close event follows, so failures are ignored here.
pub(crate) fn send_to_all<'a>(text: &JsValue, sockets: impl IntoIterator<Item = &'a WebSocket>) {
    for ws in sockets {
        let socket: &worker::web_sys::WebSocket = ws.as_ref();
        let _ = socket.unchecked_ref::<Sender>().send_value(text);
    }
}
