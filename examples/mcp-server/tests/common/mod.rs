//! What the example's end-to-end tests share: starting the HTTP example server and stopping
//! it however the test ends.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A child process that is killed when the test ends, however it ends.
pub struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `mcp-server-http --listen 127.0.0.1:0` with the arguments, environment and standard
/// error `configure` sets on its command; returns the running server and the MCP endpoint's
/// URL, read from the `listening on URL` line the server prints first.
pub fn start_http_server(configure: impl FnOnce(&mut Command)) -> (Running, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcp-server-http"));
    command.args(["--listen", "127.0.0.1:0"]);
    configure(&mut command);
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let child = Running(child);
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (child, url)
}
